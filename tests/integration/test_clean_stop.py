"""A graceful stop (SIGTERM, or Ctrl-C in a terminal) of a real process
tree leaves nothing behind:
no web or sync API worker is SIGKILLed by its gunicorn master (which logs
"Worker (pid:N) was sent SIGKILL! Perhaps out of memory?" when it sees it),
and nothing is left in the temporary folder.

The tree runs under ``tests.peers.subreaper``: a worker its master killed
and did not wait for is reaped there, so a SIGKILL is seen even when the
master exited before it could log it. At the stop, a client is half-way
through a request on each port (its headers never end, as a stalled or
slow client's would), which is what kept a worker busy past its master's
graceful timeout.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.peers.process import ADMIN, STOP_TIMEOUT, MonitorProcess, monitor_env, wait_until

# Real processes (or tools) whatever the database: left out of the PostgreSQL pass.
pytestmark = pytest.mark.process_tree

# Long enough that the embedded Redis's socket cannot live in the data
# directory (a unix socket address holds about 100 bytes): it goes to a
# folder of its own under the temporary folder.
LONG_NAME = "a-data-directory-with-a-long-name-" * 4
SIGKILL_LINE = "was sent SIGKILL"


@dataclass
class Stopped:
    exit_code: int
    log: str
    reaped: list[dict]
    temporary_during_run: list[str]
    temporary_after_stop: list[str]


def stalled_request(port: str) -> socket.socket:
    """A connection that sent the start of a request and nothing more."""
    client = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    client.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return client


def accepted(monitor: MonitorProcess, clients: list[socket.socket]) -> bool:
    """Whether a process of the tree holds the other end of every client's
    connection (a worker took it from the listen queue)."""
    wanted = {client.getsockname() for client in clients}
    held = set()
    for proc in psutil.Process(monitor.process.pid).children(recursive=True):
        try:
            held.update(tuple(c.raddr) for c in proc.net_connections(kind="tcp") if c.raddr)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return wanted <= held


def send_sigterm(monitor: MonitorProcess) -> None:
    monitor.process.send_signal(signal.SIGTERM)


def press_ctrl_c(monitor: MonitorProcess) -> None:
    """What a terminal does: SIGINT to every process of the foreground group."""
    os.killpg(monitor.process.pid, signal.SIGINT)


@pytest.fixture(scope="module", params=[send_sigterm, press_ctrl_c], ids=["sigterm", "ctrl-c"])
def stopped(request, tmp_path_factory) -> Stopped:
    """One tree with a temporary folder of its own, started, given stalled
    clients, stopped with SIGTERM or as Ctrl-C does."""
    tmp_path = tmp_path_factory.mktemp("clean-stop")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    report = tmp_path / "reaped.json"
    env = monitor_env(tmp_path / LONG_NAME, admin=ADMIN, TMPDIR=str(temporary))
    monitor = MonitorProcess(env, tmp_path / "monitor.log",
                             command_prefix=[sys.executable, "-m", "tests.peers.subreaper", str(report), "--"])
    monitor.start()
    clients: list[socket.socket] = []
    try:
        during = sorted(path.name for path in temporary.iterdir())
        clients = [stalled_request(port) for port in (env["PORT"], env["SYNC_API_PORT"])]
        wait_until(lambda: accepted(monitor, clients), 20, "gunicorn did not accept the stalled requests",
                   interval=0.1)
        request.param(monitor)
        exit_code = monitor.process.wait(timeout=STOP_TIMEOUT)
    finally:
        for client in clients:
            client.close()
        monitor.stop()
    wait_until(report.exists, 10, "the subreaper wrote no report")
    return Stopped(exit_code=exit_code, log=monitor.tail(200_000), reaped=json.loads(report.read_text()),
                   temporary_during_run=during,
                   temporary_after_stop=sorted(path.name for path in temporary.iterdir()))


def test_it_stops_its_web_workers_without_sigkill(stopped):
    assert stopped.exit_code == 0, stopped.log[-4000:]
    killed = [ended for ended in stopped.reaped if ended.get("signal") == signal.SIGKILL]
    assert killed == [], f"processes SIGKILLed at the stop: {killed}; log:\n{stopped.log[-4000:]}"
    lines = [line for line in stopped.log.splitlines() if SIGKILL_LINE in line]
    assert lines == []


def test_it_leaves_no_temporary_folder_behind(stopped):
    # The run did use the temporary folder (for the socket), so the check
    # below is about cleaning up, not about never using it.
    assert stopped.temporary_during_run, "the embedded Redis's socket was expected under TMPDIR"
    assert stopped.temporary_after_stop == []
