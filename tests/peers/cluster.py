"""Real monitor instances as process trees on loopback, for cluster tests.

Each instance is `python -m app start` in its own session (so it and every
child can be SIGKILLed together), with its own data directory, ports and
embedded Redis, configured by the seed's environment variables.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.conftest import ROOT, free_port

ADMIN = ("admin@example.org", "correct horse battery")
JOIN_SECRET = "cluster-test-join-secret-42"


@dataclass
class Instance:
    name: str
    data_dir: Path
    env: dict = field(default_factory=dict)
    process: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.env['PORT']}"

    @property
    def sync(self) -> str:
        return f"http://127.0.0.1:{self.env['SYNC_API_PORT']}"

    def start(self, wait: float = 60.0) -> "Instance":
        self.log = self.data_dir.parent / f"{self.name}.log"
        handle = open(self.log, "a")
        self.process = subprocess.Popen([sys.executable, "-m", "app", "start"], cwd=ROOT, env=self.env,
                                        stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()
        deadline = time.time() + wait
        while time.time() < deadline:
            try:
                if requests.get(f"{self.sync}/sync/api/health", timeout=1).ok and \
                        requests.get(f"{self.web}/health", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not start; log:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process tree, as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._reap_group()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        self._reap_group()

    def _reap_group(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def tail(self, chars: int = 6000) -> str:
        return self.log.read_text()[-chars:] if self.log and self.log.exists() else ""

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Read this instance's SQLite database directly (read-only)."""
        uri = f"file:{self.data_dir / 'monitor.db'}?mode=ro"
        with sqlite3.connect(uri, uri=True, timeout=30) as conn:
            return conn.execute(sql, params).fetchall()

    def health(self) -> dict:
        return requests.get(f"{self.sync}/sync/api/health", timeout=5).json()


def make_instance(root: Path, name: str, **env) -> Instance:
    data_dir = root / name
    data_dir.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items()
            if k not in {"REDIS_URL", "DATABASE_URL", "DATABASE_PATH", "ENABLE_SYNC_API", "PRIMARY_SYNC_URL"}}
    sync_port = free_port()
    base.update(
        DATA_DIR=str(data_dir), PORT=str(free_port()), SYNC_API_PORT=str(sync_port),
        PUBLIC_SYNC_URL=f"http://127.0.0.1:{sync_port}", INSTANCE_NAME=name,
        SYNC_SHARED_SECRET=JOIN_SECRET, ADMIN_EMAIL=ADMIN[0], ADMIN_PASSWORD=ADMIN[1],
        HEARTBEAT_INTERVAL="1", SYNC_INTERVAL="2", CONNECTION_TIMEOUT="2", WEB_CONCURRENCY="1",
        LOG_LEVEL="INFO",
    )
    base.update({k: str(v) for k, v in env.items()})
    return Instance(name=name, data_dir=data_dir, env=base)


def wait_until(predicate, timeout: float, message: str, interval: float = 0.5):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.time() + timeout
    last_error = None
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (requests.RequestException, sqlite3.OperationalError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"{message} (last error: {last_error})")
