"""gunicorn's settings for the web UI and the sync API.

gunicorn reads this file from the working directory (the Procfile's
processes); the launcher names it with ``--config``.

A stop must not end in SIGKILL. On SIGTERM the master gives its workers
``graceful_timeout`` seconds, then SIGKILLs those left (and logs "Worker
was sent SIGKILL! Perhaps out of memory?"). A worker waits for its open
connections for the same time, and then, on leaving, Python waits for
its request threads, one of which may be stuck reading from a client that
stalled half-way through a request. So a worker here waits for its
connections a little less than its master does, and then exits without
waiting for threads: whatever they still hold is a client that had its
chance.

Ctrl-C in a terminal sends SIGINT to every process of the group: a worker
gets it, and its master's quick stop then sends it SIGQUIT too. gunicorn
answers either by raising SystemExit, so the second one arrives while the
worker is cleaning up after the first, cuts that short, and Python is
left waiting for request threads until the master's SIGKILL. So a worker
here ends at once on SIGINT or SIGQUIT (gunicorn's quick stop: requests in
progress are dropped either way).
"""
from __future__ import annotations

import os
import signal
import sys

graceful_timeout = 5
# How long a stopping worker waits for requests in progress; its loop
# notices the deadline up to a second late, so it is well inside the
# master's graceful_timeout.
WORKER_STOP_SECONDS = 3


def post_worker_init(worker):
    """Shorten this worker's wait for open connections (its own copy of
    the settings: the master keeps graceful_timeout), and make a quick stop
    immediate."""
    worker.cfg.set("graceful_timeout", WORKER_STOP_SECONDS)
    signal.signal(signal.SIGINT, _exit_now)
    signal.signal(signal.SIGQUIT, _exit_now)


def _exit_now(signum, frame):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def worker_exit(server, worker):
    """A worker that stopped cleanly exits now, not after its threads."""
    if os.getpid() != worker.pid:
        return  # called in the master for a worker that was already gone
    ending = sys.exc_info()[1]
    if isinstance(ending, SystemExit) and ending.code in (None, 0):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
