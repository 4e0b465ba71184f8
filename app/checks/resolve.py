"""Name lookup and connecting, both within a check's deadline.

``socket.getaddrinfo`` takes no timeout: a slow or dead resolver can hold it
for the resolver's own retries (tens of seconds), far past a check's timeout.
So names are looked up on a small shared thread pool and waited for only
until the check's deadline; the pool's size bounds how many threads stuck
lookups can hold. IP literals, the common case, never touch the pool.
"""
from __future__ import annotations

import ipaddress
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from app.checks.base import CheckFailed

# Lookups take milliseconds when the resolver is healthy, so a few threads
# serve many checks; when it is dead, at most this many threads wait on it
# and further lookups queue, the queueing counting against their deadline.
LOOKUP_THREADS = 16

# Not daemon threads (concurrent.futures joins them at exit): a lookup stuck
# when the process stops delays its exit until the resolver gives up.
_lookups = ThreadPoolExecutor(max_workers=LOOKUP_THREADS, thread_name_prefix="name-lookup")

AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple]


def resolve(host: str, port: int | None, *, deadline: float, timeout: float,
            socktype: int = socket.SOCK_STREAM) -> list[AddrInfo]:
    """``getaddrinfo(host, port)``, given up at ``deadline`` (a ``time.perf_counter()`` value).

    Raises ``CheckFailed`` when the lookup fails or runs out of time;
    ``timeout`` is the check's, named in the reason.
    """
    try:
        if _is_ip_literal(host):
            # Parsed by libc without a lookup: no thread, no wait.
            return socket.getaddrinfo(host, port, type=socktype, flags=socket.AI_NUMERICHOST)
        lookup = _lookups.submit(socket.getaddrinfo, host, port, type=socktype)
        try:
            return lookup.result(timeout=max(deadline - time.perf_counter(), 0))
        except TimeoutError:
            # A lookup still queued behind stuck ones need not run at all.
            lookup.cancel()
            raise CheckFailed(f"name lookup for {host} timed out after {timeout:g} s") from None
    except socket.gaierror as exc:
        raise CheckFailed(f"cannot resolve {host}: {exc.strerror}") from None
    except UnicodeError:
        raise CheckFailed(f"cannot resolve {host}: not a valid host name") from None


def connect(addresses: list[AddrInfo], deadline: float) -> socket.socket:
    """A socket connected to the first of ``addresses`` that accepts before ``deadline``.

    Tried in order, as ``socket.create_connection`` does, each attempt
    getting what is left of the deadline. Raises ``TimeoutError`` once the
    deadline has passed, otherwise the last attempt's ``OSError``.
    """
    last_error: OSError | None = None
    for family, socktype, proto, _, sockaddr in addresses:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        sock = socket.socket(family, socktype, proto)
        try:
            sock.settimeout(remaining)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last_error = exc
    if last_error is None:
        raise OSError("no address to connect to")
    raise last_error


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
