"""Retention: raw results, hourly and daily counts and the consensus
history each pruned after their own time, in batches, without changing
what the pages show from the counts; SQLite's write-ahead log truncated."""
from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.checks import CheckResult
from app.extensions import db
from app.models import AggregatedResult, ResponseTime, ResultLocationDay, ResultLocationHour, utcnow
from app.services import retention, rollups, status_pages
from app.services.endpoints import create_endpoint
from app.services.results import record_results


@pytest.fixture(params=["sqlite", "postgresql"])
def any_app(request):
    """A standalone app on SQLite, then on PostgreSQL."""
    return request.getfixturevalue("app" if request.param == "sqlite" else "pg_app")


def _count(model, *conditions) -> int:
    return db.session.execute(select(func.count()).select_from(model).where(*conditions)).scalar_one()


def _seed(app) -> int:
    """Results 1, 10, 100 and 800 days old, and today; consensus rows as old."""
    now = utcnow()
    with app.app_context():
        endpoint_id = create_endpoint({"name": "shop", "checkType": "tcp", "target": "127.0.0.1", "port": 9,
                                       "group": "web"}).id
        for days in (800, 100, 10, 1, 0):
            at = now - timedelta(days=days, minutes=5)
            record_results([(endpoint_id, CheckResult(is_ok=days != 10, check_type="tcp", response_time_ms=5.0,
                                                      checked_at=at + timedelta(seconds=s))) for s in range(3)],
                           instance_id="local", location="here")
            for change, status in ((True, "UP"), (False, "UP")):
                db.session.add(AggregatedResult(endpoint_id=endpoint_id, computed_at=at, consensus=status,
                                                is_change=change))
        db.session.commit()
        db.session.remove()
    return endpoint_id


def test_each_kind_is_kept_its_own_time(any_app):
    endpoint_id = _seed(any_app)
    now = utcnow()
    with any_app.app_context():
        before = status_pages.page("web", now)
        pruned = retention.prune(now, batch=2, pause=0)
        assert pruned.finished
        # Raw results: a week (the 1-day-old and today's).
        assert _count(ResponseTime) == 6
        assert pruned.rows["results"] == 9
        # Hours: 90 days; days: 2 years.
        hours = db.session.execute(select(ResultLocationHour.hour)).scalars().all()
        assert min(hours) > now - timedelta(days=90) and len(hours) >= 3
        days = db.session.execute(select(ResultLocationDay.day)).scalars().all()
        assert min(days) > now - timedelta(days=730) and len(days) >= 3
        # Regular consensus rows as long as raw results; change rows 2 years,
        # but the newest before the cut stays (it says what held since).
        assert _count(AggregatedResult, AggregatedResult.is_change.is_(False)) == 2
        changes = db.session.execute(select(AggregatedResult.computed_at)
                                     .where(AggregatedResult.is_change.is_(True))).scalars().all()
        assert len([c for c in changes if c < now - timedelta(days=730)]) == 1
        # The status page's 90 days read the daily counts: the same after pruning.
        after = status_pages.page("web", now)
        assert [(b.checks, b.ok_checks) for b in after[0].bars] == [(b.checks, b.ok_checks) for b in before[0].bars]
        assert sum(b.checks for b in after[0].bars) == 9 and after[0].uptime == pytest.approx(100.0 * 6 / 9)
        # Nothing more to do the second time.
        assert retention.prune(now, batch=2, pause=0).rows == {}
        db.session.remove()


def test_counts_outlive_the_raw_results_they_counted(any_app):
    endpoint_id = _seed(any_app)
    now = utcnow()
    with any_app.app_context():
        settings = any_app.config["SETTINGS"]
        any_app.config["SETTINGS"] = dataclasses.replace(settings, result_retention_days=1)
        retention.prune(now, pause=0)
        assert _count(ResponseTime, ResponseTime.checked_at < now - timedelta(days=1)) == 0
        week = rollups.hourly_tallies(rollups.hour_floor(now - timedelta(days=7)), now, endpoint_ids=[endpoint_id])
        assert sum(t.checks for t in week[endpoint_id].values()) == 6
        db.session.remove()


def test_a_run_out_of_time_stops_and_the_next_goes_on(any_app):
    _seed(any_app)
    now = utcnow()
    with any_app.app_context():
        first = retention.prune(now, batch=1, pause=0, seconds=0)
        assert not first.finished and first.rows == {}
        assert _count(ResponseTime) == 15
        second = retention.prune(now, batch=1, pause=0)
        assert second.finished and second.rows["results"] == 9
        db.session.remove()


@pytest.mark.sqlite_only("SQLite's write-ahead log")
def test_the_write_ahead_log_is_truncated_on_sqlite(app, tmp_path):
    _seed(app)
    with app.app_context():
        db.session.execute(db.text("PRAGMA wal_autocheckpoint=0"))  # let it grow for the test
        db.session.execute(ResponseTime.__table__.update().values(failure_reason="x" * 2000))
        db.session.commit()
        wal = [p for p in tmp_path.rglob("*.db-wal")]
        assert wal and wal[0].stat().st_size > 0
        busy, pages, copied = retention.checkpoint()
        assert (busy, pages, copied) == (0, 0, 0) and wal[0].stat().st_size == 0
        db.session.remove()


def test_there_is_nothing_to_checkpoint_on_postgresql(pg_app):
    with pg_app.app_context():
        assert retention.checkpoint() is None
