"""Child processes of the launcher that do not outlive it.

Each child asks the kernel for SIGTERM when the launcher dies
(``PR_SET_PDEATHSIG``, Linux), so a launcher killed outright (SIGKILL, the
OOM killer) takes its web, sync, worker, clock and embedded Redis with it
instead of leaving them holding the ports and the data directory for the
next start. Elsewhere the children start as before, and the next start
deals with what a crash left behind (``EmbeddedRedis.stop_orphans``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys

_PR_SET_PDEATHSIG = 1


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
