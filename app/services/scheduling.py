"""Finding due work and claiming it, for the clock.

Each endpoint's next due time lives in ``endpoints.next_check_at`` (unix
seconds). The clock claims due endpoints by moving that time forward with a
conditional UPDATE, so a check is enqueued once even if two clocks run.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from sqlalchemy import bindparam, select, update

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


def claim_due(now: float, limit: int, *, ahead: float = 0.0) -> list[DueCheck]:
    """Claim up to ``limit`` endpoints due by ``now + ahead`` and schedule
    their next check. The job starts each check at its own due time, so
    claiming a tick ahead removes the wait for the next tick from the lag.

    1. Read the due rows (oldest due first).
    2. Move each row's ``next_check_at`` forward with an UPDATE conditioned
       on the value just read (one executemany); only a row that changed is
       ours to enqueue. If fewer rows changed than were read, another clock
       won some: undo, and claim row by row.
    3. Commit once. A missed period (workers down) is skipped, not replayed,
       and the endpoint keeps its phase.
    """
    rows = db.session.execute(
        select(Endpoint.id, Endpoint.next_check_at, Endpoint.interval_seconds)
        .where(Endpoint.is_paused.is_(False), Endpoint.checked_here.is_(True),
               Endpoint.next_check_at <= now + ahead)
        .order_by(Endpoint.next_check_at)
        .limit(limit)
    ).all()
    plans = []
    for endpoint_id, read_at, interval in rows:
        if read_at <= 0:
            # Never checked: check now, then settle into this endpoint's phase.
            due_at, next_at = now, now + interval * phase(endpoint_id)
        else:
            due_at, next_at = read_at, read_at + interval
            if next_at <= now:
                # Periods missed (the clock or the workers were away): one
                # check now, the next at the endpoint's own place in its
                # interval, so endpoints that all missed theirs do not all
                # fall due in the same second from then on.
                next_at = read_at + interval * (math.floor((now - read_at) / interval) + 1)
        plans.append({"_id": endpoint_id, "_read": read_at, "_next": next_at, "due_at": due_at})
    if not plans:
        db.session.commit()
        return []
    table = Endpoint.__table__
    changed = db.session.execute(
        update(table)
        .where(table.c.id == bindparam("_id"), table.c.next_check_at == bindparam("_read"))
        .values(next_check_at=bindparam("_next")),
        [{k: plan[k] for k in ("_id", "_read", "_next")} for plan in plans],
    ).rowcount
    if changed == len(plans):
        claimed = [DueCheck(plan["_id"], plan["due_at"]) for plan in plans]
    else:
        # Another clock moved some rows first (or the driver cannot count an
        # executemany). A rival that read the same row writes the same value,
        # so the value cannot tell whose a row is: undo, and claim row by row,
        # keeping only rows whose own UPDATE changed them.
        db.session.rollback()
        claimed = []
        for plan in plans:
            if db.session.execute(
                update(table)
                .where(table.c.id == plan["_id"], table.c.next_check_at == plan["_read"])
                .values(next_check_at=plan["_next"])
            ).rowcount == 1:
                claimed.append(DueCheck(plan["_id"], plan["due_at"]))
    db.session.commit()
    return claimed
