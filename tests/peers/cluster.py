"""Real monitor instances as process trees on loopback, for cluster tests.

Each instance is a ``MonitorProcess`` (``python -m app start`` in a session
of its own) with its own data directory, reserved ports and embedded Redis,
configured by the seed's environment variables.
"""
from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import requests

from tests.peers.process import ADMIN, MonitorProcess, monitor_env

JOIN_SECRET = "cluster-test-join-secret-42"


class Instance(MonitorProcess):
    """One member of a cluster under test, named, with its own SQLite file."""

    def __init__(self, name: str, data_dir: Path, env: dict[str, str], **process):
        super().__init__(env, log=data_dir.parent / f"{name}.log", **process)
        self.name = name
        self.data_dir = data_dir

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Read this instance's SQLite database directly (read-only), waiting
        up to 30 s for the instance's own writers."""
        uri = f"file:{self.data_dir / 'monitor.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
            return conn.execute(sql, params).fetchall()

    def health(self) -> dict:
        return requests.get(f"{self.sync}/sync/api/health", timeout=30).json()


def make_instance(root: Path, name: str, *, host: str | None = None, command_prefix: Sequence[str] = (),
                  **env) -> Instance:
    """An instance named ``name`` in ``root/name``, not started yet.

    ``host``: listen on this address (its ``HOST``) and be reached there
    (127.0.0.1 when not given); ``command_prefix``: run it so, such as
    ``ip netns exec NAME`` (see ``tests/peers/netns.py``).
    """
    data_dir = root / name
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = monitor_env(
        data_dir, admin=ADMIN, INSTANCE_NAME=name, SYNC_SHARED_SECRET=JOIN_SECRET,
        # Rounds with the primary every second keep the tests short; a
        # request may take as long as the default allows, since a timed-out
        # round backs off for longer and longer.
        HEARTBEAT_INTERVAL=1, SYNC_INTERVAL=2, CONNECTION_TIMEOUT=10, WEB_CONCURRENCY=1, LOG_LEVEL="INFO",
        **env,
    )
    if host is not None:
        settings["HOST"] = host
    instance = Instance(name, data_dir, settings, host=host or "127.0.0.1", command_prefix=command_prefix)
    settings.setdefault("PUBLIC_SYNC_URL", instance.sync)
    return instance
