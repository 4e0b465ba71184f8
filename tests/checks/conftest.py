"""Fixtures shared by the check tests."""
from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.checks import resolve
from tests.peers.dns import DnsServer, inside_namespace


def pytest_collection_modifyitems(config, items):
    # Tests that need the DNS server run in a pytest of their own, inside a
    # namespace whose resolver asks it (test_in_dns_namespace.py); outside
    # it they are left to that test.
    outside = []
    for item in items:
        if "resolver" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.dns)
            if not inside_namespace():
                outside.append(item)
    if outside:
        config.hook.pytest_deselected(items=outside)
        items[:] = [item for item in items if item not in outside]


@pytest.fixture
def resolver():
    """A real DNS server on 127.0.0.1:53, asked by the real system resolver.

    Only inside the namespace that ``test_in_dns_namespace.py`` makes; the
    process's lookup pool is the test's own, so a lookup one test leaves
    hanging is never joined by the next test's check of the same name.
    """
    lookups = ThreadPoolExecutor(max_workers=resolve.DEFAULT_LOOKUP_THREADS, thread_name_prefix="test-lookup")
    saved = resolve._lookups, resolve._lookup_threads, resolve._in_flight
    resolve._lookups, resolve._lookup_threads, resolve._in_flight = lookups, resolve.DEFAULT_LOOKUP_THREADS, {}
    with DnsServer() as server:
        yield server
        # Frees the lookups still waiting on a hanging name (they get SERVFAIL
        # at their next attempt) and waits for them before the pool goes.
        server.release()
        resolve._lookups.shutdown(wait=True)
        lookups.shutdown(wait=True)
    resolve._lookups, resolve._lookup_threads, resolve._in_flight = saved


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
