"""Fixtures shared by the check tests."""
from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.checks import resolve


class FakeResolver:
    """``socket.getaddrinfo`` with made-up answers for the names a test gives.

    A resolver that hangs or fails cannot run here without replacing the
    system's, and asking the real one about an unknown name would send a
    query off this machine. Every other name (``localhost``, IP literals)
    goes to the real ``getaddrinfo``.
    """

    def __init__(self, real_getaddrinfo) -> None:
        self._real = real_getaddrinfo
        self._hanging: set[str] = set()
        self._unknown: set[str] = set()
        self._answers: dict[str, list[str]] = {}
        self.released = threading.Event()
        self.asked: list[str] = []

    def hang(self, host: str) -> None:
        """Lookups of ``host`` block until the test ends, then fail."""
        self._hanging.add(host)

    def unknown(self, host: str) -> None:
        """Lookups of ``host`` fail at once, as for a name that does not exist."""
        self._unknown.add(host)

    def answer(self, host: str, addresses: list[str]) -> None:
        """Lookups of ``host`` return these IPv4 addresses, in this order."""
        self._answers[host] = addresses

    def __call__(self, host, port, *args, **kwargs):
        self.asked.append(host)
        if host in self._hanging:
            self.released.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host in self._unknown:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host in self._answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))
                    for address in self._answers[host]]
        return self._real(host, port, *args, **kwargs)


@pytest.fixture
def resolver(monkeypatch):
    fake = FakeResolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    # Lookups of the test's own: a lookup one test leaves hanging must not
    # be joined by the next test's check of the same name.
    lookups = ThreadPoolExecutor(max_workers=resolve.DEFAULT_LOOKUP_THREADS, thread_name_prefix="test-lookup")
    monkeypatch.setattr(resolve, "_lookups", lookups)
    monkeypatch.setattr(resolve, "_lookup_threads", resolve.DEFAULT_LOOKUP_THREADS)
    monkeypatch.setattr(resolve, "_in_flight", {})
    yield fake
    # Frees the lookup threads still blocked and waits for them, before
    # getaddrinfo and the pool are restored.
    fake.released.set()
    resolve._lookups.shutdown(wait=True)
    lookups.shutdown(wait=True)


@pytest.fixture
def listen():
    """Opens a TCP listener on a loopback address; returns its port."""
    sockets = []

    def open_listener(address: str = "127.0.0.1") -> int:
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
        sockets.append(sock)
        try:
            sock.bind((address, 0))
        except OSError as exc:
            pytest.skip(f"cannot listen on {address}: {exc.strerror}")
        sock.listen()
        return sock.getsockname()[1]

    yield open_listener
    for sock in sockets:
        sock.close()
