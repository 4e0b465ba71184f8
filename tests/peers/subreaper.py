"""Run a command as a child subreaper and report how its orphans ended.

    python -m tests.peers.subreaper REPORT.json -- COMMAND...

A process whose parent exits before reaping it is handed to the nearest
ancestor marked as a subreaper (Linux ``PR_SET_CHILD_SUBREAPER``) instead
of to init. So a process that its parent killed and then did not wait for
(gunicorn's master SIGKILLs a worker that outlives its graceful timeout,
and may exit before reaping it) is reaped here, and its exit status, which
nobody logged, is written to the report: ``[{"pid": ..., "signal": 9}, ...]``
for every descendant reaped here, with ``"code"`` for those that exited.

SIGTERM and SIGINT are passed on to the command; this process exits with
the command's exit code once every descendant has been reaped.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
# After the command exits, orphans still running get this long to end.
ORPHAN_WAIT_SECONDS = 30.0


def main(argv: list[str]) -> int:
    report, separator, *command = argv
    if separator != "--" or not command:
        print("usage: python -m tests.peers.subreaper REPORT.json -- COMMAND...", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"prctl(PR_SET_CHILD_SUBREAPER) failed: errno {ctypes.get_errno()}", file=sys.stderr)
        return 2
    child = subprocess.Popen(command)
    for signum in (signal.SIGTERM, signal.SIGINT):
        # os.kill, not Popen.send_signal: that would reap the command
        # itself, and its status would be lost to the loop below.
        signal.signal(signum, lambda signum, frame: os.kill(child.pid, signum))
    reaped: list[dict] = []
    exit_code = None
    deadline = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break  # nothing left to reap
        except InterruptedError:
            continue
        if pid == 0:
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.05)
            continue
        if pid == child.pid:
            exit_code = os.waitstatus_to_exitcode(status)
            child.returncode = exit_code
            deadline = time.monotonic() + ORPHAN_WAIT_SECONDS
            continue
        ended = {"pid": pid}
        if os.WIFSIGNALED(status):
            ended["signal"] = os.WTERMSIG(status)
        else:
            ended["code"] = os.WEXITSTATUS(status)
        reaped.append(ended)
    with open(report, "w") as handle:
        json.dump(reaped, handle)
    if exit_code is None:
        return 1
    return exit_code if exit_code >= 0 else 128 - exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
