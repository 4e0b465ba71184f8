"""Loopback ports for servers that bind later, or bind again after a stop.

A port found free by binding port 0 comes from the kernel's ephemeral
range. Until the server that is meant to have it binds it (a child process
booting, a test server started again after an outage), any outgoing
connection on the machine or another test's port-0 server may take it, and
the server fails to bind, or worse, a health check reaches someone else's
server. Ports reserved here lie below that range, where the kernel never
hands out ports by itself, and each is held with a lock file for as long as
this test process lives, so concurrent test runs never pick the same one.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

LOCK_DIR = Path(tempfile.gettempdir()) / "monitor-test-ports"
LOWEST = 20000
# Open lock files, by port: closing one would release its port.
_held: dict[int, int] = {}


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _candidates() -> range:
    low, high = _ephemeral_range()
    if low - LOWEST >= 1000:
        return range(LOWEST, low)
    if 65535 - high >= 1000:
        return range(high + 1, 65536)
    return range(LOWEST, 65536)  # no room outside the range: the lock files still keep test runs apart


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def reserve_port() -> int:
    """A loopback TCP port nothing listens on, kept for this test process."""
    LOCK_DIR.mkdir(exist_ok=True)
    with contextlib.suppress(OSError):  # only its owner may; shared like /tmp, for every user's runs
        LOCK_DIR.chmod(0o1777)
    candidates = _candidates()
    for _ in range(500):
        port = random.choice(candidates)
        if port in _held:
            continue
        try:
            fd = os.open(LOCK_DIR / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # another test process holds it
            continue
        if not _bindable(port):
            os.close(fd)
            continue
        _held[port] = fd
        return port
    raise RuntimeError(f"no free loopback port found in {candidates}")
