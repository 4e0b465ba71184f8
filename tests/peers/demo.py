"""``python -m app demo`` as a subprocess, as a user runs it, for the tests
of the demo: its output gathered line by line, what it printed, and every
process of its trees found (and, in the end, stopped) wherever it runs.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import psutil

from tests.conftest import ROOT
from tests.peers.process import MARKER, MONITOR_SETTINGS, wait_until

READY_LINE = "Press Ctrl-C to stop everything."
START_TIMEOUT = 240.0  # three trees on a loaded two-core machine


class DemoRun:
    """The demo command as a subprocess, its output gathered line by line."""

    def __init__(self, tmp: Path, *args: str):
        self.tmp = tmp
        self.marker = uuid.uuid4().hex
        env = {k: v for k, v in os.environ.items() if k not in MONITOR_SETTINGS}
        # Its temporary folder goes under this test's, where the test can
        # see whether it is left behind.
        env.update(TMPDIR=str(tmp), PYTHONUNBUFFERED="1", **{MARKER: self.marker})
        self.process = subprocess.Popen([sys.executable, "-m", "app", "demo", *args], cwd=ROOT, env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        """Everything it printed so far."""
        return "\n".join(self.lines)

    def wait_ready(self) -> None:
        """Wait until it says it is running (failing with its output if it exits)."""
        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"the demo exited with {self.process.returncode}:\n{self.output}")
            return READY_LINE in self.lines

        wait_until(ready, START_TIMEOUT, lambda: f"the demo did not come up; its output:\n{self.output}")

    def shown(self, label: str) -> str:
        """The value printed after ``label:`` in the demo's announcement."""
        match = re.search(rf"^\s*{label}:\s+(\S+)", self.output, re.MULTILINE)
        assert match, f"no {label!r} line in:\n{self.output}"
        return match.group(1)

    def leftovers(self) -> list[psutil.Process]:
        """Processes of the demo's trees: its marker, or a working
        directory in its temporary folder (the embedded Redis)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if proc.environ().get(MARKER) == self.marker or proc.cwd().startswith(str(self.tmp) + os.sep):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def kill_everything(self) -> None:
        """The safety net of a failed test: nothing of the demo outlives it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=90)
        left = self.leftovers()
        for proc in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(left, timeout=10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def hold_port(port: int) -> socket.socket | None:
    """Listen on loopback ``port`` if nobody does, so it is taken."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None  # taken already: as good for the test
    sock.listen()
    return sock
