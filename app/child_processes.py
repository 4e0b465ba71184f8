"""Child processes of the launcher that do not outlive it.

Each child asks the kernel for SIGTERM when the launcher dies
(``PR_SET_PDEATHSIG``, Linux), so a launcher killed outright (SIGKILL, the
OOM killer) takes its web server, workers, clock and embedded Redis with
it instead of leaving them holding the ports and the data directory for
the next start. Elsewhere the children start as before, and the next start
deals with what a crash left behind (``EmbeddedRedis.stop_orphans``).

The monitor's own processes are forked from the launcher (``fork``), not
started afresh: the launcher has imported and built everything they run
before it forks, so their code and data are pages they share with it and
with each other (copy-on-write) instead of a private copy each. A Python
process of the monitor holds about 90 MB of its own; forked, each adds
only what it changes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable

_PR_SET_NAME = 15
_PR_SET_PDEATHSIG = 1
# The kernel keeps a process name of 15 bytes (and the NUL).
MAX_NAME_BYTES = 15


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


# Loaded here, not in the forked child, where only async-signal-safe work
# belongs.
_LIBC = _libc()


def _die_with(parent: int):
    def preexec() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the launcher died before the request took hold
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def popen(command: list[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` for a child that gets SIGTERM when the launcher dies.

    The request is made between fork and exec (``preexec_fn``), which is
    unsafe only with other threads running; the launcher runs none.
    """
    return subprocess.Popen(command, preexec_fn=_die_with(os.getpid()), **kwargs)  # noqa: PLW1509


def share_what_is_loaded() -> None:
    """Before the first fork: move every object made so far out of the
    garbage collector's reach, so no collection in a child writes to the
    pages they share (it would copy each page it walks)."""
    gc.collect()
    gc.freeze()


class ForkedProcess:
    """A forked child, with the part of ``subprocess.Popen``'s interface the
    launcher uses: ``pid``, ``poll``, ``wait``, ``terminate``, ``kill``."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 0  # reaped elsewhere; nothing more to know
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork(name: str, run: Callable[[], int | None]) -> ForkedProcess:
    """Run ``run()`` in a forked copy of this (single-threaded) process.

    The child is named ``name`` (what ``ps -o comm`` and ``top`` show),
    dies with the launcher, starts with default signal handling and
    without the launcher's open files (as ``subprocess`` children start
    with ``close_fds``: the data directory's lock among them), and exits
    with what ``run`` returns or raises; it never returns into the
    launcher's code.
    """
    if threading.active_count() > 1:
        raise RuntimeError("forking a process that runs threads")
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return ForkedProcess(pid)
    code = 1
    try:
        _become_child(name, parent)
        code = run()
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def _become_child(name: str, parent: int) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_NAME, os.fsencode(name)[:MAX_NAME_BYTES])
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the launcher died before the request took hold
        os._exit(0)
    os.closerange(3, _max_fd())


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 65536
