"""Readiness: whether this instance can do its work now.

Ready means all four hold: the database answers, Redis answers, some clock
holds the lease (``workers.clock.LEASE_KEY``: a clock is claiming due
checks), and at least one RQ worker on this instance's queues is alive
(its worker key exists: rq refreshes it while the worker runs and deletes it
on a clean stop; a killed worker's key expires with its TTL).

Every check has its own short bound, so a dead peer makes the probe answer
"not ready" in seconds instead of hanging it: the database is reached
through an engine of its own (no pool, a 2 s connect timeout, 1 s per
statement), Redis through a client of its own (1 s to connect, 1 s per
command, no retries). The app's pool and ``queues.connection()`` are left
alone: their long timeouts suit the work, not a probe.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from flask import current_app
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from app.services import queues
from app.services.openapi import Answer

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 1.0
# libpq's smallest connect timeout.
DATABASE_CONNECT_TIMEOUT_SECONDS = 2
DATABASE_STATEMENT_TIMEOUT_MS = 1000
MAX_DETAIL_LENGTH = 300

DATABASE = "database"
REDIS = "redis"
CLOCK = "clock"
WORKERS = "workers"
CHECKS = (DATABASE, REDIS, CLOCK, WORKERS)

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


@dataclass(frozen=True)
class Outcome:
    """One check's result: whether it passed, and what was seen or went wrong."""

    name: str
    ok: bool
    detail: str
    elapsed_ms: float

    def to_dict(self) -> dict:
        return {"ok": self.ok, "detail": self.detail, "elapsedMs": round(self.elapsed_ms, 1)}


@dataclass(frozen=True)
class Readiness:
    """Every check's outcome, in ``CHECKS`` order."""

    outcomes: tuple[Outcome, ...]

    @property
    def ready(self) -> bool:
        return all(outcome.ok for outcome in self.outcomes)

    @property
    def http_status(self) -> int:
        """200 when ready, else 503 (a load balancer takes the instance out)."""
        return 200 if self.ready else 503

    @property
    def failing(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]

    def message(self) -> str:
        """One line naming every failing check with its reason."""
        if self.ready:
            return "ready"
        return "not ready: " + "; ".join(f"{o.name}: {o.detail}" for o in self.failing)

    def to_dict(self) -> dict:
        body = {"status": "ready" if self.ready else "not_ready",
                "checks": {outcome.name: outcome.to_dict() for outcome in self.outcomes}}
        if not self.ready:
            body["failing"] = [outcome.name for outcome in self.failing]
            body["message"] = self.message()
        return body


def _reason(exc: BaseException) -> str:
    """An exception as a short reason: its type and first line, no URL credentials."""
    first_line = (str(exc).strip().splitlines() or [""])[0]
    reason = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
    return re.sub(r"://[^/@\s]*@", "://", reason)[:MAX_DETAIL_LENGTH]


def probe_redis_url() -> str | None:
    """The Redis this instance's workers use (``REDIS_URL``), or None if unset."""
    try:
        return queues.redis_url()
    except RuntimeError:
        return None


@lru_cache(maxsize=4)
def probe_redis(url: str) -> Redis:
    """A Redis client for probes: 1 s to connect, 1 s per command, no retries."""
    return Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                          socket_timeout=REDIS_TIMEOUT_SECONDS, retry=Retry(NoBackoff(), 0),
                          health_check_interval=0)


def _probe_engine(url: str) -> Engine:
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("postgresql"):
                connect_args = {"connect_timeout": DATABASE_CONNECT_TIMEOUT_SECONDS}
            else:
                connect_args = {"timeout": DATABASE_STATEMENT_TIMEOUT_MS / 1000}
            # No pool: every probe makes a connection, which is the question asked.
            engine = _engines[url] = create_engine(url, poolclass=NullPool, connect_args=connect_args)
        return engine


def _timed(name: str, check) -> Outcome:
    started = time.monotonic()
    try:
        ok, detail = check()
    except Exception as exc:  # any failure is the answer, not an error of the probe
        ok, detail = False, _reason(exc)
    return Outcome(name, ok, detail, (time.monotonic() - started) * 1000.0)


class _ChangeLog:
    """Logs when this process's answer changes, not at every probe: a load
    balancer asks every few seconds, and a dead Redis would fill the log."""

    def __init__(self):
        self._lock = threading.Lock()
        self._failing: tuple[str, ...] = ()

    def note(self, state: Readiness) -> None:
        failing = tuple(outcome.name for outcome in state.failing)
        with self._lock:
            changed, self._failing = failing != self._failing, failing
        if changed and failing:
            logger.warning("readiness: %s", state.message())
        elif changed:
            logger.info("readiness: ready again")


_changes = _ChangeLog()


def check_database() -> Outcome:
    """Connect and read this instance's id, within about two seconds."""

    def read():
        engine = _probe_engine(current_app.config["SQLALCHEMY_DATABASE_URI"])
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text(f"SET LOCAL statement_timeout = {DATABASE_STATEMENT_TIMEOUT_MS}"))
            else:
                # The app's connect hook sets SQLite's busy timeout to 30 s; a probe waits 1 s.
                conn.exec_driver_sql(f"PRAGMA busy_timeout = {DATABASE_STATEMENT_TIMEOUT_MS}")
            found = conn.execute(text("SELECT value FROM instance_config WHERE key = 'instance_id'")).scalar()
        return (True, "reachable") if found else (False, "reachable, but this instance has no id yet "
                                                          "(migrations not run?)")

    return _timed(DATABASE, read)


def check_redis(client: Redis | None) -> Outcome:
    def ping():
        if client is None:
            return False, "REDIS_URL is not set"
        client.ping()
        return True, "reachable"

    return _timed(REDIS, ping)


def check_clock(client: Redis) -> Outcome:
    from workers.clock import LEASE_KEY

    def lease():
        ttl_ms = client.pttl(LEASE_KEY)
        if ttl_ms is None or ttl_ms < 0:
            return False, f"no clock holds the lease ({LEASE_KEY}): nothing is scheduling checks"
        return True, f"lease held, {ttl_ms} ms left"

    return _timed(CLOCK, lease)


def live_workers(client: Redis) -> int:
    """RQ workers alive that take work from this instance's queues."""
    from rq import Worker

    ours = set(queues.ALL_QUEUES)
    return sum(1 for worker in Worker.all(connection=client) if ours & set(worker.queue_names()))


def check_workers(client: Redis) -> Outcome:
    def count():
        alive = live_workers(client)
        if not alive:
            return False, f"no RQ worker alive on the {', '.join(queues.ALL_QUEUES)} queues"
        return True, f"{alive} alive"

    return _timed(WORKERS, count)


def _skipped(name: str, because: str) -> Outcome:
    return Outcome(name, False, f"not checked: {because}", 0.0)


def readiness() -> Readiness:
    """Run every check, each within its own short timeout."""
    database = check_database()
    url = probe_redis_url()
    client = probe_redis(url) if url else None
    redis = check_redis(client)
    if redis.ok:
        state = Readiness((database, redis, check_clock(client), check_workers(client)))
    else:
        # Clock and workers live in Redis: asking again would only add timeouts.
        state = Readiness((database, redis, _skipped(CLOCK, "Redis is unreachable"),
                           _skipped(WORKERS, "Redis is unreachable")))
    _changes.note(state)
    return state


# --- what /readyz answers --------------------------------------------------------

class OutcomeAnswer(Answer):
    ok: bool
    detail: str
    elapsed_ms: float


class ReadinessAnswer(Answer):
    """Ready (200) or not (503, naming what failed)."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, OutcomeAnswer]
    failing: list[str] | None = None
    message: str | None = None
