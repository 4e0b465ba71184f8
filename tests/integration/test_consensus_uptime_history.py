"""Consensus uptime over a long history: the status in force when a window
starts is read from the newest change before it alone, and the uptimes are
what the whole history gives, on SQLite and PostgreSQL."""
from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import event, insert

from app.extensions import db
from app.models import AggregatedResult, utcnow
from app.services import consensus
from tests.ui.conftest import make_endpoint

SPANS = (timedelta(hours=24), timedelta(days=7), timedelta(days=30))


def _history(endpoint_ids, now):
    """Per endpoint: 40 days of changes (UP, DOWN, PARTIAL, PENDING at random
    moments, some two at one moment), with a regular row every hour between."""
    rng = random.Random(9)
    rows = []
    for n, endpoint_id in enumerate(endpoint_ids):
        moments = sorted(now - timedelta(seconds=rng.uniform(0, 40 * 86400)) for _ in range(300 if n else 0))
        if n == 2:  # a steady endpoint: nothing changed for the last 35 days
            moments = [m for m in moments if m < now - timedelta(days=35)]
        for index, at in enumerate(moments):
            for _ in range(2 if index % 50 == 0 else 1):  # the same moment twice: the later row wins
                rows.append({"endpoint_id": endpoint_id, "computed_at": at, "is_change": True, "details": {},
                             "consensus": rng.choice(["UP", "UP", "DOWN", "PARTIAL", "PENDING"])})
        rows += [{"endpoint_id": endpoint_id, "computed_at": now - timedelta(hours=h, minutes=n), "is_change": False,
                  "consensus": "UP", "details": {}} for h in range(40 * 24)]
    return rows


def _expected(rows, endpoint_id, start, now):
    """The share of decided time UP or PARTIAL in [start, now], from every change of the endpoint."""
    changes = [r for r in rows if r["endpoint_id"] == endpoint_id and r["is_change"]]  # in insertion (id) order
    changes.sort(key=lambda r: r["computed_at"])  # stable: rows at one moment keep their id order
    up = decided = 0.0
    for index, row in enumerate(changes):
        until = changes[index + 1]["computed_at"] if index + 1 < len(changes) else now
        seconds = (min(until, now) - max(row["computed_at"], start)).total_seconds()
        if seconds > 0 and row["consensus"] in ("UP", "PARTIAL", "DOWN"):
            decided += seconds
            up += seconds if row["consensus"] != "DOWN" else 0
    return 100.0 * up / decided if decided else None


@pytest.mark.parametrize("database", ["app", "pg_app"])
def test_uptime_over_a_long_history_is_what_every_change_gives(database, request):
    application = request.getfixturevalue(database)
    endpoint_ids = [make_endpoint(application, name=f"site-{n}") for n in range(4)]
    now = utcnow()
    rows = _history(endpoint_ids, now)
    with application.app_context():
        for start in range(0, len(rows), 5000):
            db.session.execute(insert(AggregatedResult.__table__), rows[start:start + 5000])
        db.session.commit()
        found = consensus.uptimes(endpoint_ids, now, spans=SPANS)
    for endpoint_id in endpoint_ids:
        for span in SPANS:
            expected = _expected(rows, endpoint_id, now - span, now)
            assert found[endpoint_id][span] == (pytest.approx(expected) if expected is not None else None), \
                (endpoint_id, span)
    # The first has no history at all; the steady one is UP or down for its whole month, as its last change says.
    assert found[endpoint_ids[0]] == dict.fromkeys(SPANS)
    assert found[endpoint_ids[2]][timedelta(days=30)] in (0.0, 100.0, None)


@pytest.mark.parametrize("database", ["app", "pg_app"])
def test_the_status_before_the_window_is_read_from_one_row_per_endpoint(database, request):
    application = request.getfixturevalue(database)
    endpoint_ids = [make_endpoint(application, name=f"site-{n}") for n in range(3)]
    now = utcnow()
    rows = _history(endpoint_ids, now)
    with application.app_context():
        db.session.execute(insert(AggregatedResult.__table__), rows)
        db.session.commit()
        fetched = []
        engine = db.engine

        def count_rows(conn, cursor, statement, parameters, context, executemany):
            if "aggregated_results" in statement:
                fetched.append(statement)

        event.listen(engine, "after_cursor_execute", count_rows)
        try:
            before = db.session.execute(consensus._status_before(endpoint_ids, now - timedelta(days=1))).all()
        finally:
            event.remove(engine, "after_cursor_execute", count_rows)
    # One statement, one row per endpoint: the newest change before the window, or none.
    assert len(fetched) == 1 and len(before) == len(endpoint_ids)
    for endpoint_id, status in before:
        older = [r for r in rows if r["endpoint_id"] == endpoint_id and r["is_change"]
                 and r["computed_at"] < now - timedelta(days=1)]
        newest = max(older, key=lambda r: r["computed_at"], default=None)
        if newest is not None:  # of two rows at one moment the later, as the sort above takes the last
            newest = [r for r in older if r["computed_at"] == newest["computed_at"]][-1]
        assert status == (newest["consensus"] if newest else None)
