"""Migration 0008_detail fills per-location roll-ups for the hours already
rolled up, so a month per location shows at once after an upgrade; 0012_counts
counts the hours never rolled up and those that gained late results, and
the days, so every reader finds the counts as if kept all along."""
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, select, text

from app.extensions import db
from app.models import Endpoint, ResultLocationHour
from app.services import configuration, history, rollups
from tests.conftest import ROOT, make_app

MIGRATIONS = str(ROOT / "migrations")


def _naive_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0, tzinfo=None)


def _fill_as_0007_would(now: datetime) -> dict:
    """Results from two instances over four days, the hours before the last
    two rolled up (as the schema of 0007 holds them); returns the hours."""
    oldest = _naive_hour(now) - timedelta(days=4)
    mark = _naive_hour(now) - timedelta(hours=2)
    stamp = sa.bindparam("at", type_=sa.DateTime())
    db.session.execute(text(
        "INSERT INTO endpoints (id, name, check_type, target, options, interval_seconds, timeout_seconds, "
        "failure_threshold, success_threshold, is_paused, created_at, updated_at, status, consecutive_failures, "
        "consecutive_successes, next_check_at, locations_voting, locations_up, locations_down, "
        "consensus_rule, alert_on_partial, cert_expiry_days) VALUES (1, 'shop', 'http', 'http://127.0.0.1:9/', "
        "'{}', 60, 5, 1, 1, false, :at, :at, 'UP', 0, 0, 0, 0, 0, 0, 'majority', false, 14)"
    ).bindparams(stamp), {"at": oldest})
    n = 0
    hour = oldest
    while hour < _naive_hour(now) + timedelta(hours=1):
        for instance, location, ok, ms in (("primary-1", "oslo", True, 10.0), ("dependent-1", "lima", n % 3 != 0, 40.0)):
            for minute in (10, 40):
                n += 1
                db.session.execute(text(
                    "INSERT INTO response_times (result_id, endpoint_id, instance_id, location, checked_at, is_ok, "
                    "status, response_time_ms, check_type, check_metadata) VALUES "
                    "(:rid, 1, :instance, :location, :at, :ok, 'UP', :ms, 'http', '{}')"
                ).bindparams(stamp), {"rid": f"00000000-0000-0000-0000-{n:012d}", "instance": instance,
                                      "location": location, "at": hour + timedelta(minutes=minute), "ok": ok,
                                      "ms": ms if ok else None})
        if hour < mark:
            db.session.execute(text("INSERT INTO rolled_up_hours (hour, rolled_up_at) VALUES (:at, :at)")
                               .bindparams(stamp), {"at": hour})
        hour += timedelta(hours=1)
    db.session.commit()
    return {"oldest": oldest, "mark": mark}


def _check_filled(hours: dict) -> None:
    rows = db.session.execute(select(ResultLocationHour)).scalars().all()
    filled = {row.hour.replace(tzinfo=None) for row in rows}
    # Every rolled-up hour but the oldest (retention may have cut into it); none after the watermark.
    assert min(filled) == hours["oldest"] + timedelta(hours=1)
    assert max(filled) == hours["mark"] - timedelta(hours=1)
    assert len(rows) == 2 * len(filled)
    assert {(row.instance_id, row.location) for row in rows} == {("primary-1", "oslo"), ("dependent-1", "lima")}
    assert all(row.checks == 2 for row in rows)


def _add_as_0011_would(hours: dict) -> None:
    """A late result in a rolled-up hour, marked to roll up again, and an
    all-locations hour older than the per-location hours."""
    stamp = sa.bindparam("at", type_=sa.DateTime())
    late = hours["mark"] - timedelta(hours=3)
    db.session.execute(text(
        "INSERT INTO response_times (result_id, endpoint_id, instance_id, location, checked_at, is_ok, "
        "status, response_time_ms, check_type, check_metadata) VALUES "
        "('late', 1, 'dependent-1', 'lima', :at, false, 'DOWN', NULL, 'http', '{}')").bindparams(stamp),
        {"at": late + timedelta(minutes=50)})
    db.session.execute(text("INSERT INTO stale_hours (hour, endpoint_id) VALUES (:at, 1)").bindparams(stamp),
                       {"at": late})
    db.session.execute(text(
        "INSERT INTO result_hours (endpoint_id, hour, checks, ok_checks, response_ms_sum, response_ms_count, "
        "response_ms_max) VALUES (1, :at, 7, 6, 60.0, 6, 10.0)").bindparams(stamp),
        {"at": hours["oldest"] - timedelta(days=2)})
    db.session.commit()


def _check_counted(hours: dict, now: datetime) -> None:
    # Readers get the same per location from the counts as from raw results.
    start = rollups.hour_floor(now - timedelta(days=3))
    from_counts = {}
    for key, tally in rollups.location_rows(start, now, endpoint_ids=[1]):
        from_counts.setdefault(key.instance_id, rollups.Tally()).add(tally)
    from_raw = {}
    for key, tally in rollups.raw_location_tallies(start, None, endpoint_ids=[1]).items():
        from_raw.setdefault(key.instance_id, rollups.Tally()).add(tally)
    assert {i: (t.checks, t.ok_checks) for i, t in from_counts.items()} == \
           {i: (t.checks, t.ok_checks) for i, t in from_raw.items()}
    assert from_counts["dependent-1"].ok_checks < from_counts["dependent-1"].checks  # the late failure among them
    uptimes = {u.location.name: u.uptimes["30d"] for u in history.location_uptimes(db.session.get(Endpoint, 1), now)}
    assert uptimes["oslo"] == 100.0 and 60.0 < uptimes["lima"] < 70.0
    # Days: per location from the hours, and one row for every location
    # where only the all-locations hour was kept.
    old_day = (hours["oldest"] - timedelta(days=2)).replace(hour=0, tzinfo=timezone.utc)
    days = rollups.daily_tallies(old_day, now, endpoint_ids=[1])[1]
    assert (days[old_day.date()].checks, days[old_day.date()].ok_checks) == (7, 6)
    assert sum(t.checks for t in days.values()) == 7 + db.session.execute(
        text("SELECT COUNT(*) FROM response_times WHERE checked_at >= :at").bindparams(
            sa.bindparam("at", type_=sa.DateTime())), {"at": hours["oldest"] + timedelta(hours=1)}).scalar_one()


def _upgrade_and_check(now: datetime) -> None:
    upgrade(directory=MIGRATIONS, revision="0007")
    hours = _fill_as_0007_would(now)
    upgrade(directory=MIGRATIONS, revision="0011_mapfig")
    _check_filled(hours)
    _add_as_0011_would(hours)
    upgrade(directory=MIGRATIONS)
    configuration.ensure_initialized()
    _check_counted(hours, now)


def test_it_fills_the_rolled_up_hours_per_location_on_sqlite(tmp_path):
    app = make_app(tmp_path, serve="none")
    now = datetime.now(timezone.utc)
    with app.app_context():
        _upgrade_and_check(now)
        # The reads above leave the session's transaction open; on PostgreSQL
        # (TEST_BACKEND=postgres) the downgrade's ALTER TABLE would wait on it.
        db.session.remove()
        downgrade(directory=MIGRATIONS, revision="0011_mapfig")
        tables = set(inspect(db.engine).get_table_names())
        assert {"result_hours", "rolled_up_hours", "stale_hours"} <= tables and "result_location_days" not in tables
        downgrade(directory=MIGRATIONS, revision="0007")
        assert "result_location_hours" not in inspect(db.engine).get_table_names()
        db.engine.dispose()


def test_it_fills_the_rolled_up_hours_per_location_on_postgresql(tmp_path, postgres_url):
    from tests.conftest import reset_postgres

    reset_postgres(postgres_url)
    app = make_app(tmp_path, {"DATABASE_URL": postgres_url}, serve="none")
    now = datetime.now(timezone.utc)
    with app.app_context():
        _upgrade_and_check(now)
        db.session.remove()
        downgrade(directory=MIGRATIONS, revision="0011_mapfig")
        assert "result_location_days" not in inspect(db.engine).get_table_names()
        db.session.remove()
        db.engine.dispose()
