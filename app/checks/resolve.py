"""Name lookup and connecting, both within a check's deadline.

``socket.getaddrinfo`` takes no timeout: a slow or dead resolver can hold it
for the resolver's own retries (tens of seconds), far past a check's timeout.
So names are looked up on a shared thread pool and waited for only until the
check's deadline. IP literals, the common case, never touch the pool.

Checks that need a name already being looked up wait on that lookup rather
than starting another, so a name whose DNS zone stops answering holds one
thread however many endpoints use it. Answers are shared only while the
lookup is in flight, never cached: caching is the system resolver's (nscd,
systemd-resolved) job, and it honours TTLs.

The bound: each distinct name stuck at once holds one thread until the
resolver gives up. The pool has at least as many threads as the worker runs
checks at once (``configure``), so unless more distinct names than that are
stuck together, a healthy name never waits behind them; if they are, its
lookup queues, and the queueing counts against its check's deadline.
"""
from __future__ import annotations

import ipaddress
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from app.checks.base import CheckFailed

# The default CHECK_CONCURRENCY; a worker running more checks at once raises
# it with ``configure``.
DEFAULT_LOOKUP_THREADS = 64

_lock = threading.Lock()
# Threads are started only as lookups need them. Not daemon threads
# (concurrent.futures joins them at exit): a lookup stuck when the process
# stops delays its exit until the resolver gives up.
_lookups = ThreadPoolExecutor(max_workers=DEFAULT_LOOKUP_THREADS, thread_name_prefix="name-lookup")
_lookup_threads = DEFAULT_LOOKUP_THREADS
# (host, port, socktype) -> the lookup in flight for it; removed when it ends.
_in_flight: dict[tuple[str, int | None, int], Future] = {}

AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple]


def configure(max_workers: int) -> None:
    """Let up to ``max_workers`` lookups run at once, where that is more than now.

    Called by a worker with its check concurrency, so lookups are never what
    checks queue for. Lookups already running finish on the threads they have.
    """
    global _lookups, _lookup_threads
    with _lock:
        if max_workers <= _lookup_threads:
            return
        previous = _lookups
        _lookups = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="name-lookup")
        _lookup_threads = max_workers
    # Its threads end once their lookups (running or queued) are done.
    previous.shutdown(wait=False)


def resolve(host: str, port: int | None, *, deadline: float, timeout: float,
            socktype: int = socket.SOCK_STREAM) -> list[AddrInfo]:
    """``getaddrinfo(host, port)``, given up at ``deadline`` (a ``time.perf_counter()`` value).

    Raises ``CheckFailed`` when the lookup fails or runs out of time;
    ``timeout`` is the check's, named in the reason.
    """
    try:
        if is_ip_literal(host):
            # Parsed by libc without a lookup: no thread, no wait.
            return socket.getaddrinfo(host, port, type=socktype, flags=socket.AI_NUMERICHOST)
        lookup = _lookup(host, port, socktype)
        try:
            return lookup.result(timeout=max(deadline - time.perf_counter(), 0))
        except TimeoutError:
            # Not cancelled: other checks may be waiting on the same lookup,
            # and a later check of this name will join it while it lasts.
            raise CheckFailed(f"name lookup for {host} timed out after {timeout:g} s") from None
    except (socket.gaierror, UnicodeError) as exc:
        raise CheckFailed(_failure(host, exc)) from None


def _failure(host: str, exc: Exception) -> str:
    """The DOWN reason for a lookup of ``host`` that failed with ``exc``."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}: {exc.strerror}"
    return f"cannot resolve {host}: not a valid host name"


def resolve_any(hosts: list[str], port: int | None, *, deadline: float, timeout: float) -> str:
    """The first of ``hosts`` to resolve, looked up all at once, by ``deadline``.

    For a client that may use any of several servers (Kafka's bootstrap
    list): one name whose DNS hangs must not cost the others their turn.
    Raises ``CheckFailed`` with the first host's reason when none resolves
    in time.
    """
    literal = next((host for host in hosts if is_ip_literal(host)), None)
    if literal is not None:
        return literal
    pending = {_lookup(host, port, socket.SOCK_STREAM): host for host in hosts}
    failures: dict[str, str] = {}
    while pending:
        done, _ = wait(pending, timeout=max(deadline - time.perf_counter(), 0), return_when=FIRST_COMPLETED)
        if not done:
            break
        for lookup in done:
            host = pending.pop(lookup)
            try:
                lookup.result()
                return host
            except (socket.gaierror, UnicodeError) as exc:
                failures[host] = _failure(host, exc)
    first = hosts[0]
    raise CheckFailed(failures.get(first) or f"name lookup for {first} timed out after {timeout:g} s")


def _lookup(host: str, port: int | None, socktype: int) -> Future:
    """The lookup in flight for these arguments, started if there is none.

    1. Under the lock, join the lookup in flight or submit and record one,
       so two checks of a name can never both start a lookup. A finished
       lookup still recorded is not joined: a future runs its callbacks only
       after waking its waiters, so one of them may ask again first.
    2. Outside the lock, arrange for the entry to be removed when the lookup
       ends: a lookup that is already over runs the callback at once, in
       this thread, which takes the lock itself.
    3. The callback removes the entry only if it is still this lookup's, not
       one started after it (1).
    """
    key = (host, port, socktype)
    with _lock:
        lookup = _in_flight.get(key)
        if lookup is not None and not lookup.done():
            return lookup
        lookup = _lookups.submit(socket.getaddrinfo, host, port, type=socktype)
        _in_flight[key] = lookup

    def forget(done: Future) -> None:
        with _lock:
            if _in_flight.get(key) is done:
                del _in_flight[key]

    lookup.add_done_callback(forget)
    return lookup


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


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
