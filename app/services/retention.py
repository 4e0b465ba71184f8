"""How long results are kept, and pruning what is older.

Raw results (``response_times``) are kept ``RESULT_RETENTION_DAYS`` (7 by
default), their hourly counts ``HOURLY_RETENTION_DAYS`` (90: the endpoint
page's month), their daily counts ``DAILY_RETENTION_DAYS`` (730: the status
pages' 90 days and anything longer). The consensus history keeps its
regular rows (written every 5 minutes, read by nothing once their moment
has passed) as long as raw results, and its change rows (from which
consensus uptime is computed) as long as daily counts, but always each
endpoint's newest change before the cut, which says what held from then on.

The clock's ``prune-results`` job runs ``prune`` every 10 minutes, on a
check worker:

1. Every delete takes at most ``BATCH`` rows and commits, and the pruner
   pauses ``PAUSE`` seconds between batches, so storing results (SQLite's
   one writer at a time) waits for one short batch at most.
2. Raw results are found through the (endpoint_id, checked_at) index, a
   chunk of endpoints at a time: no scan of the whole table per batch.
3. A dependent keeps every result still in its outbox (no ``synced_at``:
   the primary has not acknowledged it), however old: it is the only copy.
4. A run stops after ``MAX_SECONDS``, so a worker is back to checks soon
   after a retention was shortened (or the upgrade from the former 30-day
   default); the next run goes on from there. A run keeps up with 20,000
   endpoints at 60 s (20,000 results a minute) in a fraction of that.
5. On SQLite the write-ahead log is then checkpointed and truncated
   (``checkpoint``), waiting for readers at most a second.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, delete, exists, select, tuple_
from sqlalchemy.orm import aliased

from app.extensions import db
from app.models import AggregatedResult, Endpoint, ResponseTime, ResultLocationDay, ResultLocationHour, utcnow

logger = logging.getLogger(__name__)

BATCH = 2_000
PAUSE = 0.05
MAX_SECONDS = 120.0
_ENDPOINT_CHUNK = 500


@dataclass
class Pruned:
    """Rows deleted by one run, per kind, and whether it finished."""

    rows: dict[str, int] = field(default_factory=dict)
    finished: bool = True

    def add(self, kind: str, count: int) -> None:
        if count:
            self.rows[kind] = self.rows.get(kind, 0) + count


class _Budget:
    """Batches of one run: a pause between two, and a deadline."""

    def __init__(self, seconds: float, pause: float):
        self.deadline = time.monotonic() + seconds
        self.pause = pause
        self.started = False

    def next_batch(self) -> bool:
        """Whether another batch may start (after the pause)."""
        if self.started and self.pause:
            time.sleep(self.pause)
        self.started = True
        return time.monotonic() < self.deadline


def prune(now: datetime | None = None, *, batch: int = BATCH, pause: float = PAUSE,
          seconds: float = MAX_SECONDS) -> Pruned:
    """Delete what is older than its retention, in committed batches."""
    from app.services import configuration

    now = now or utcnow()
    settings = current_app.config["SETTINGS"]
    raw_cut = now - timedelta(days=settings.result_retention_days)
    daily_cut = now - timedelta(days=settings.daily_retention_days)
    budget, pruned = _Budget(seconds, pause), Pruned()
    results = ResponseTime.__table__.c
    keep_outbox = [results.synced_at.is_not(None)] if configuration.is_dependent() else []
    aggregated = AggregatedResult.__table__.c
    newer = aliased(AggregatedResult.__table__)
    steps = [
        ("results", lambda ids: _by_id(ResponseTime, results.endpoint_id.in_(ids), results.checked_at < raw_cut,
                                       *keep_outbox)),
        ("consensus rows", lambda ids: _by_id(AggregatedResult, aggregated.endpoint_id.in_(ids),
                                              aggregated.computed_at < raw_cut, aggregated.is_change.is_(False))),
        ("consensus changes", lambda ids: _by_id(
            AggregatedResult, aggregated.endpoint_id.in_(ids), aggregated.is_change.is_(True),
            aggregated.computed_at < daily_cut,
            exists().where(newer.c.endpoint_id == aggregated.endpoint_id, newer.c.is_change.is_(True),
                           newer.c.computed_at > aggregated.computed_at, newer.c.computed_at < daily_cut))),
    ]
    endpoint_ids = list(db.session.execute(select(Endpoint.id).order_by(Endpoint.id)).scalars())
    for kind, step in steps:
        for start in range(0, len(endpoint_ids), _ENDPOINT_CHUNK):
            if not _in_batches(step(endpoint_ids[start:start + _ENDPOINT_CHUNK]), batch, budget, pruned, kind):
                return pruned
    for model, period, days, kind in ((ResultLocationHour, "hour", settings.hourly_retention_days, "hourly counts"),
                                      (ResultLocationDay, "day", settings.daily_retention_days, "daily counts")):
        table = model.__table__.c
        key = tuple_(table.endpoint_id, table[period], table.instance_id)
        old = select(table.endpoint_id, table[period], table.instance_id).where(
            table[period] < now - timedelta(days=days))
        if not _in_batches(lambda limit: delete(model).where(key.in_(old.limit(limit))), batch, budget, pruned,
                           kind):
            return pruned
    if pruned.rows:
        logger.info("pruned %s", ", ".join(f"{count:,} {kind}" for kind, count in pruned.rows.items()))
    return pruned


def _by_id(model, *conditions):
    """A delete of at most ``limit`` rows matching ``conditions``, by id."""
    table = model.__table__
    return lambda limit: delete(model).where(table.c.id.in_(select(table.c.id).where(and_(*conditions)).limit(limit)))


def _in_batches(statement_for, batch: int, budget: _Budget, pruned: Pruned, kind: str) -> bool:
    """Run ``statement_for(batch)`` until it deletes fewer rows than that;
    False when the run's time is up first."""
    while True:
        if not budget.next_batch():
            pruned.finished = False
            logger.info("pruning stopped for this run after %s; the next run goes on", pruned.rows)
            return False
        count = db.session.execute(statement_for(batch)).rowcount
        db.session.commit()
        pruned.add(kind, count)
        if count < batch:
            return True


def checkpoint() -> tuple[int, int, int] | None:
    """SQLite: copy the write-ahead log into the database and truncate it,
    waiting at most a second for readers (else it is done in part, and the
    next run tries again); returns (busy, log pages, pages copied). None on
    PostgreSQL."""
    if db.engine.dialect.name != "sqlite":
        return None
    with db.engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        raw.execute("PRAGMA busy_timeout=1000")
        try:
            busy, pages, copied = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            raw.execute("PRAGMA busy_timeout=30000")
    if busy:
        logger.info("write-ahead log checkpointed in part (%d of %d pages): readers were busy", copied, pages)
    return busy, pages, copied
