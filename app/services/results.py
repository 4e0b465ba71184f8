"""Storing check results and applying each endpoint's thresholds.

One pipeline per batch of checks, as in Gatus: evaluate (done by the check),
store (one multi-row insert), then update the endpoints' status, counting
consecutive failures and successes, and record every status change.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.checks import CheckResult
from app.extensions import db
from app.models import STATUS_DOWN, STATUS_PENDING, STATUS_UP, Endpoint, ResponseTime, StatusChange, utcnow
from app.services.rollups import noting_late_hours

logger = logging.getLogger(__name__)

MAX_REASON_LENGTH = 2000


@dataclass(frozen=True)
class Transition:
    """An endpoint's status changed because of a result."""

    endpoint_id: int
    from_status: str
    to_status: str
    reason: str | None


def result_row(endpoint_id: int, result: CheckResult, *, instance_id: str, location: str) -> dict:
    """A ``response_times`` row for a result made here."""
    return {
        "result_id": result.result_id,
        "endpoint_id": endpoint_id,
        "instance_id": instance_id,
        "location": location,
        "checked_at": result.checked_at,
        "is_ok": result.is_ok,
        "status": result.status,
        "response_time_ms": result.response_time_ms,
        # The sync API accepts reasons up to this length; longer ones (a
        # redirect to a long SSO URL) are cut here rather than refused there.
        "failure_reason": result.failure_reason[:MAX_REASON_LENGTH] if result.failure_reason else None,
        "check_type": result.check_type,
        "check_metadata": result.metadata,
    }


def store_results(rows: list[dict]) -> None:
    """Insert result rows, skipping any ``result_id`` already stored.

    Every result stored goes through here. The caller commits. (How many
    rows were new is not reported: psycopg gives no row count for a
    many-row insert, and RETURNING makes it markedly slower.)
    """
    if not rows:
        return
    dialect = db.engine.dialect.name
    if dialect in {"sqlite", "postgresql"}:
        make = sqlite_insert if dialect == "sqlite" else pg_insert
        stmt = make(ResponseTime.__table__).on_conflict_do_nothing(index_elements=["result_id"])
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        stmt = insert(ResponseTime.__table__)
    # Results for hours already rolled up mark those hours to roll up again.
    with noting_late_hours(rows):
        db.session.execute(stmt, rows)


def next_status(status: str, failures: int, successes: int, *, failure_threshold: int,
                success_threshold: int) -> str:
    """The status after counting, with thresholds on consecutive results.

    A new endpoint (PENDING) goes UP on its first success; DOWN only after
    ``failure_threshold`` failures in a row, and UP again after
    ``success_threshold`` successes in a row.
    """
    if failures >= failure_threshold:
        return STATUS_DOWN
    if successes and (status == STATUS_PENDING or successes >= success_threshold):
        return STATUS_UP
    return status


def apply_results(results: Iterable[tuple[int, CheckResult]]) -> list[Transition]:
    """Update endpoints' counters and status from results, oldest first.

    Returns the status changes, also stored as ``status_changes`` rows.
    The caller commits.
    """
    by_endpoint: dict[int, list[CheckResult]] = {}
    for endpoint_id, result in results:
        by_endpoint.setdefault(endpoint_id, []).append(result)
    if not by_endpoint:
        return []

    current = {
        row.id: row
        for row in db.session.execute(
            select(Endpoint.id, Endpoint.status, Endpoint.consecutive_failures,
                   Endpoint.consecutive_successes, Endpoint.failure_threshold,
                   Endpoint.success_threshold, Endpoint.status_changed_at, Endpoint.is_paused,
                   Endpoint.last_checked_at, Endpoint.last_response_time_ms, Endpoint.last_failure_reason)
            .where(Endpoint.id.in_(by_endpoint))
            # Two batches with results for one endpoint (a "check now" beside
            # the scheduled check) must count one after the other. NO KEY
            # UPDATE, not UPDATE: it does not conflict with the KEY SHARE lock
            # that inserting results referencing the endpoint takes, which two
            # batches would otherwise each hold while waiting on the other.
            .order_by(Endpoint.id)
            .with_for_update(key_share=True)
        )
    }
    updates, transitions = [], []
    for endpoint_id, endpoint_results in by_endpoint.items():
        row = current.get(endpoint_id)
        if row is None:
            continue  # deleted while its check ran
        status, failures, successes = row.status, row.consecutive_failures, row.consecutive_successes
        changed_at = row.status_changed_at
        for result in sorted(endpoint_results, key=lambda r: r.checked_at):
            if row.is_paused:
                break  # a paused endpoint's manual checks are kept, not counted or alerted
            if result.is_ok:
                successes, failures = successes + 1, 0
            else:
                failures, successes = failures + 1, 0
            new = next_status(status, failures, successes, failure_threshold=row.failure_threshold,
                              success_threshold=row.success_threshold)
            if new != status:
                transitions.append(Transition(endpoint_id, status, new, result.failure_reason))
                changed_at = result.checked_at
                db.session.add(StatusChange(endpoint_id=endpoint_id, from_status=status, to_status=new,
                                            changed_at=result.checked_at, reason=result.failure_reason))
                logger.info("endpoint %s is %s (was %s)%s", endpoint_id, new, status,
                            f": {result.failure_reason}" if result.failure_reason else "")
                status = new
        last = max(endpoint_results, key=lambda r: r.checked_at)
        if row.last_checked_at is not None and row.last_checked_at > last.checked_at:
            # A straggler (a slow check stored after a newer one) does not
            # move "last checked" back in time.
            newest = row.last_checked_at, row.last_response_time_ms, row.last_failure_reason
        else:
            newest = last.checked_at, last.response_time_ms, last.failure_reason
        updates.append({
            "_id": endpoint_id,
            "status": status,
            "status_changed_at": changed_at,
            "consecutive_failures": failures,
            "consecutive_successes": successes,
            "last_checked_at": newest[0],
            "last_response_time_ms": newest[1],
            "last_failure_reason": newest[2],
        })
    if updates:
        stmt = (
            update(Endpoint.__table__)
            .where(Endpoint.__table__.c.id == bindparam("_id"))
            .values({key: bindparam(key) for key in updates[0] if key != "_id"})
        )
        db.session.execute(stmt, updates)
    return transitions


def record_results(results: list[tuple[int, CheckResult]], *, instance_id: str, location: str) -> list[Transition]:
    """Store results made here and apply thresholds, in one transaction.

    On a dependent the rows wait in the outbox (no ``synced_at``) until the
    primary acknowledges them; elsewhere there is no one to send them to.
    """
    from app.config import ROLE_DEPENDENT
    from app.services import configuration

    synced_at = None if configuration.role() == ROLE_DEPENDENT else utcnow()
    rows = [{**result_row(eid, r, instance_id=instance_id, location=location), "synced_at": synced_at}
            for eid, r in results]
    # Results for endpoints deleted while the check ran have nowhere to go.
    live = set(db.session.execute(
        select(Endpoint.id).where(Endpoint.id.in_({eid for eid, _ in results}))
    ).scalars())
    rows = [row for row in rows if row["endpoint_id"] in live]
    store_results(rows)
    transitions = apply_results([(eid, r) for eid, r in results if eid in live])
    db.session.commit()
    return transitions


def recent_results(endpoint_id: int, *, limit: int = 100, since=None) -> list[ResponseTime]:
    query = (
        select(ResponseTime)
        .where(ResponseTime.endpoint_id == endpoint_id)
        .order_by(ResponseTime.checked_at.desc(), ResponseTime.id.desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(ResponseTime.checked_at >= since)
    return list(db.session.execute(query).scalars())
