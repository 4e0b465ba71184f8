"""Storing check results and the thresholds they are counted with.

One pipeline per batch of checks, as in Gatus: evaluate (done by the check),
store (one multi-row insert), then hand the rows to ``consensus.ingest``,
which keeps this location's status (consecutive failures and successes
against the endpoint's thresholds) and votes again on the endpoints.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy import select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.checks import CheckResult
from app.extensions import db
from app.services.openapi import Answer
from app.models import STATUS_DOWN, STATUS_PENDING, STATUS_UP, Endpoint, ResponseTime, UTCDateTime, utcnow
from app.services.rollups import count_results, counting

logger = logging.getLogger(__name__)


MAX_REASON_LENGTH = 2000


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
    """Insert result rows, skipping any ``result_id`` already stored, and
    add the ones it stored to their hour's and day's counts
    (``rollups.counting``), in the caller's transaction.

    Every result stored goes through here. The caller commits. Only the
    rows the insert added are counted, so a result sent twice (an outbox
    replayed after a lost reply) is counted once.
    """
    if not rows:
        return
    if db.engine.dialect.name == "postgresql":
        _store_and_count_on_postgresql(rows)
        return
    table = ResponseTime.__table__
    added = db.session.execute(sqlite_insert(table).on_conflict_do_nothing(index_elements=["result_id"]),
                               rows).rowcount
    count_results(added)


# PostgreSQL types of the columns a result row fills, in insert order.
_COLUMNS = {"result_id": "text", "endpoint_id": "integer", "instance_id": "text", "location": "text",
            "checked_at": "timestamp", "is_ok": "boolean", "status": "text", "response_time_ms": "float8",
            "failure_reason": "text", "check_type": "text", "check_metadata": "json", "synced_at": "timestamp"}


def _store_and_count_on_postgresql(rows: list[dict]) -> None:
    """One statement: the rows as one array per column (``unnest``), the
    insert, and the counts of the rows it returns (they never leave the
    server). Executemany with RETURNING would build every row's parameters
    in Python, several times the cost of the insert alone."""
    values = {name: [row.get(name) for row in rows] for name in _COLUMNS}
    as_stored = UTCDateTime()  # naive UTC, refusing a naive time as every other write does
    for name in ("checked_at", "synced_at"):
        values[name] = [as_stored.process_bind_param(v, None) for v in values[name]]
    values["check_metadata"] = [json.dumps(v if v is not None else {}) for v in values["check_metadata"]]
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _COLUMNS.items())
    hours, days = counting("new")
    db.session.execute(text(
        f"WITH new AS (INSERT INTO response_times ({', '.join(_COLUMNS)}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT (result_id) DO NOTHING "
        "RETURNING endpoint_id, instance_id, location, checked_at, is_ok, response_time_ms), "
        f"hours AS ({hours}) {days}"), values)


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


def record_results(results: list[tuple[int, CheckResult]], *, instance_id: str, location: str) -> list:
    """Store results made here and vote on their endpoints, in one
    transaction; returns the consensus changes (``consensus.Transition``).

    On a dependent the rows wait in the outbox (no ``synced_at``) until the
    primary acknowledges them; elsewhere there is no one to send them to.
    """
    from app.services import configuration, consensus

    synced_at = None if configuration.is_dependent() else utcnow()
    rows = [{**result_row(eid, r, instance_id=instance_id, location=location), "synced_at": synced_at}
            for eid, r in results]
    # Results for endpoints deleted while the check ran have nowhere to go.
    live = set(db.session.execute(
        select(Endpoint.id).where(Endpoint.id.in_({eid for eid, _ in results}))
    ).scalars())
    rows = [row for row in rows if row["endpoint_id"] in live]
    store_results(rows)
    transitions = consensus.ingest(rows, instance_id=instance_id, location=location, own=True)
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


# --- what the JSON API answers ---------------------------------------------------

class ResultAnswer(Answer):
    """One check result from one location."""

    result_id: str
    endpoint_id: int
    instance_id: str | None
    location: str | None
    checked_at: datetime
    is_ok: bool
    status: str
    response_time: float | None
    failure_reason: str | None
    check_type: str | None
    metadata: dict[str, Any]
    in_maintenance: bool = Field(description="Checked while a maintenance window covered the endpoint")


class ResultsAnswer(Answer):
    """An endpoint's newest results, newest first."""

    endpoint_id: int
    results: list[ResultAnswer]
