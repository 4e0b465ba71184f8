"""Finding due work and claiming it, for the clock.

Each endpoint's next due time lives in ``endpoints.next_check_at`` (unix
seconds). The clock claims due endpoints by moving that time forward with a
conditional UPDATE, so a check is enqueued once even if two clocks run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select, update

from app.extensions import db
from app.models import Endpoint

logger = logging.getLogger(__name__)

# Spreads first-run phases evenly over the interval (golden-ratio sequence),
# so endpoints created together are not all due in the same second forever.
_GOLDEN = 0.6180339887498949


@dataclass(frozen=True)
class DueCheck:
    endpoint_id: int
    due_at: float


def phase(endpoint_id: int) -> float:
    """A fixed fraction in (0, 1] for an endpoint's place in its interval."""
    return ((endpoint_id * _GOLDEN) % 1.0) or 1.0


def claim_due(now: float, limit: int) -> list[DueCheck]:
    """Claim up to ``limit`` due endpoints and schedule their next check.

    1. Read the due rows (oldest due first).
    2. For each, move ``next_check_at`` forward with an UPDATE conditioned on
       the value just read; only a row that changed is ours to enqueue.
    3. Commit once. A missed period (workers down) is skipped, not replayed.
    """
    rows = db.session.execute(
        select(Endpoint.id, Endpoint.next_check_at, Endpoint.interval_seconds)
        .where(Endpoint.is_paused.is_(False), Endpoint.next_check_at <= now)
        .order_by(Endpoint.next_check_at)
        .limit(limit)
    ).all()
    claimed = []
    table = Endpoint.__table__
    for endpoint_id, read_at, interval in rows:
        if read_at <= 0:
            # Never checked: check now, then settle into this endpoint's phase.
            due_at, next_at = now, now + interval * phase(endpoint_id)
        else:
            due_at, next_at = read_at, read_at + interval
            if next_at <= now:
                next_at = now + interval
        changed = db.session.execute(
            update(table)
            .where(table.c.id == endpoint_id, table.c.next_check_at == read_at)
            .values(next_check_at=next_at)
        ).rowcount
        if changed == 1:
            claimed.append(DueCheck(endpoint_id, due_at))
    db.session.commit()
    return claimed
