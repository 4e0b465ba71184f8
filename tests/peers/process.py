"""The monitor as a real process tree on loopback, for tests that need the
whole of it: ``python -m app start`` (embedded Redis, migrations, web, sync
API, workers, clock) with its own data directory and reserved ports,
started and waited for, then stopped or killed by a fixture.

The tree runs in a session of its own, so one signal reaches all of it at
once. The embedded redis-server runs in a process group of its own (the
launcher stops it last), works in the data directory and writes its
process title over its environment. So ``stop`` ends every process that
carries the tree's marker in its environment or works in its data
directory: nothing outlives the test, even when a start fails halfway or a
test fails after a kill.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil
import requests

from tests.conftest import ROOT
from tests.peers.ports import reserve_port

ADMIN = ("admin@example.org", "correct horse battery")
# Generous for a loaded two-core CI machine; an idle one starts in about 6 s.
START_TIMEOUT = 90.0
# The launcher gives its children 10 s to stop, then stops its Redis.
STOP_TIMEOUT = 60.0
MARKER = "MONITOR_TEST_PROCESS_TREE"
# The monitor's own settings: whatever a developer's shell holds of them must
# not point the monitor under test at other databases, ports or roles.
MONITOR_SETTINGS = frozenset({
    "ADMIN_EMAIL", "ADMIN_PASSWORD", "CHECK_BATCH_SIZE", "CHECK_CONCURRENCY", "CONNECTION_TIMEOUT", "CONNECTIVITY_CHECK_TARGET",
    "DATABASE_PATH", "DATABASE_URL", "DATA_DIR", "ENABLE_SYNC_API", "FAILOVER_CHECK_INTERVAL",
    "FAILOVER_MAX_FAILURES", "FAILOVER_ORDER",
    "HEARTBEAT_INTERVAL", "HOST", "INSTANCE_LATITUDE", "INSTANCE_LOCATION", "INSTANCE_LONGITUDE", "INSTANCE_NAME", "LOG_LEVEL", "METRICS_PUBLIC",
    "METRICS_TOKEN", "PORT",
    "PRIMARY_SYNC_URL", "PUBLIC_SYNC_URL", "REDIS_URL", "RESULT_RETENTION_DAYS", "SECRET_KEY", "SECRETS_KEY",
    "SYNC_API_PORT", "SYNC_INTERVAL", "SYNC_SHARED_SECRET", "SYNC_TOKEN_TTL", "TRUSTED_PROXIES",
    "WEB_CONCURRENCY", "WORKER_PROCESSES",
})


def monitor_env(data_dir: Path, *, admin: tuple[str, str] | None = None, **settings) -> dict[str, str]:
    """This process's environment without the monitor's settings, plus a
    data directory, reserved web and sync API ports, and ``settings``."""
    env = {k: v for k, v in os.environ.items() if k not in MONITOR_SETTINGS}
    env.update(DATA_DIR=str(data_dir), PORT=str(reserve_port()), SYNC_API_PORT=str(reserve_port()))
    if admin:
        env.update(ADMIN_EMAIL=admin[0], ADMIN_PASSWORD=admin[1])
    env.update({k: str(v) for k, v in settings.items()})
    return env


def wait_until(predicate: Callable, timeout: float, message: str | Callable[[], str], interval: float = 0.5):
    """Poll ``predicate`` until it returns something truthy, and return that.

    A request that fails or a SQLite database that is busy counts as "not
    yet"; after ``timeout`` seconds the test fails with ``message`` (a
    callable is called then, so a log tail in it is current).
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (requests.RequestException, sqlite3.OperationalError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (waited {timeout:g} s; last error: {last_error})")
        time.sleep(interval)


class MonitorProcess:
    """One ``python -m app start`` process tree, its output in ``log``."""

    def __init__(self, env: dict[str, str], log: Path, *, host: str = "127.0.0.1",
                 command_prefix: Sequence[str] = ()):
        """``host``: the address its web UI and sync API are reached at (its
        ``HOST`` when it listens on one address); ``command_prefix``: put
        before the command, such as ``ip netns exec NAME``."""
        self.env = env
        self.log = log
        self.host = host
        self.command_prefix = list(command_prefix)
        self.process: subprocess.Popen | None = None
        self._marker = uuid.uuid4().hex

    @property
    def web(self) -> str:
        return f"http://{self._url_host}:{self.env['PORT']}"

    @property
    def sync(self) -> str:
        return f"http://{self._url_host}:{self.env['SYNC_API_PORT']}"

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host

    def start(self, timeout: float = START_TIMEOUT) -> MonitorProcess:
        """Start the tree and wait until both the web UI and the sync API answer.

        If it does not come up, everything it started is stopped before the
        error is raised.
        """
        self.launch()
        return self.wait_started(timeout)

    def wait_started(self, timeout: float = START_TIMEOUT) -> MonitorProcess:
        """Wait until a launched tree answers (stopping it if it never does)."""
        try:
            wait_until(self._answers, timeout,
                       lambda: f"the monitor did not answer on {self.web} and {self.sync}; log:\n{self.tail()}",
                       interval=0.3)
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self) -> subprocess.Popen:
        """Start the tree without waiting for it."""
        with open(self.log, "a") as handle:
            self.process = subprocess.Popen(
                [*self.command_prefix, sys.executable, "-m", "app", "start"], cwd=ROOT,
                env={**self.env, MARKER: self._marker},
                stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        return self.process

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"`python -m app start` exited with {self.process.returncode}; "
                                 f"log:\n{self.tail()}")
        return (requests.get(f"{self.web}/health", timeout=2).ok
                and requests.get(f"{self.sync}/sync/api/health", timeout=2).ok)

    def kill(self) -> None:
        """SIGKILL the launcher's process group at once, as a crash would.

        The embedded redis-server is not in that group; it gets SIGTERM
        from the kernel when its launcher dies and stops by itself, and a
        restart stops one that did not.
        """
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)

    def terminate(self) -> None:
        """Ask the launcher to stop (SIGTERM), without waiting."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM the launcher and wait; then SIGKILL whatever of the tree is left."""
        self.terminate()
        if self.process is not None:
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        # Until none is left: a launcher still alive here could start more.
        for _ in range(5):
            left = self.leftovers()
            if not left:
                return
            for proc in left:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(left, timeout=10)
            if self.process is not None and self.process.poll() is None:
                self.process.wait(timeout=10)

    def leftovers(self) -> list[psutil.Process]:
        """The live processes of this tree, wherever their session."""
        data_dir = str(Path(self.env["DATA_DIR"]).resolve())
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if proc.environ().get(MARKER) == self._marker or proc.cwd() == data_dir:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def __enter__(self) -> MonitorProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
