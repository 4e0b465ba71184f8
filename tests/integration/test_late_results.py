"""Results are counted in their hour and day as they are stored: late ones
(a dependent's outbox after an outage) at once in their own hour, ones sent
again never twice, and concurrent writers lose nothing, on SQLite and
PostgreSQL."""
from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, inspect, select

from app.checks import CheckResult
from app.extensions import db
from app.models import ResponseTime, ResultLocationDay, ResultLocationHour, utcnow
from app.services import history, rollups
from app.services.endpoints import create_endpoint
from app.services.results import record_results, result_row, store_results
from tests.conftest import ROOT, SECRET, make_app, migrate, reset_postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def any_app(request):
    """A standalone app on SQLite, then on PostgreSQL."""
    return request.getfixturevalue("app" if request.param == "sqlite" else "pg_app")


@pytest.fixture(params=["sqlite", "postgresql"])
def primary(request, tmp_path):
    """The sync API of a primary, on SQLite, then on PostgreSQL."""
    if request.param == "sqlite":
        yield request.getfixturevalue("primary_app")
        return
    url = request.getfixturevalue("postgres_url")
    reset_postgres(url)
    application = make_app(tmp_path, {"DATABASE_URL": url, "ENABLE_SYNC_API": "true",
                                      "SYNC_SHARED_SECRET": SECRET, "INSTANCE_LOCATION": "primary-lab"},
                           serve="sync")
    migrate(application)
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


def three_hours_ago():
    return rollups.hour_floor(utcnow()) - timedelta(hours=3)


def check(at, *, ok=True, ms=10.0):
    return CheckResult(is_ok=ok, check_type="tcp", response_time_ms=ms if ok else None,
                       failure_reason=None if ok else "refused", checked_at=at)


def endpoint(app, name="db") -> int:
    with app.app_context():
        return create_endpoint({"name": name, "checkType": "tcp", "target": "127.0.0.1", "port": 5432}).id


def store(app, endpoint_id, *checks):
    with app.app_context():
        record_results([(endpoint_id, c) for c in checks], instance_id="local", location="here")
        db.session.remove()


def hour_row(app, endpoint_id, hour, instance_id="local"):
    """(checks, ok checks, response time sum, count, max) counted for the hour."""
    with app.app_context():
        row = db.session.get(ResultLocationHour, (endpoint_id, hour, instance_id))
        out = None if row is None else (row.checks, row.ok_checks, row.response_ms_sum,
                                        row.response_ms_count, row.response_ms_max)
        db.session.remove()
        return out


def day_checks(app, endpoint_id) -> int:
    with app.app_context():
        count = db.session.execute(select(func.sum(ResultLocationDay.checks))
                                   .where(ResultLocationDay.endpoint_id == endpoint_id)).scalar_one()
        db.session.remove()
        return count or 0


def stored(app) -> int:
    with app.app_context():
        count = db.session.execute(select(func.count()).select_from(ResponseTime)).scalar_one()
        db.session.remove()
        return count


def test_a_late_result_is_counted_in_its_hour_at_once(any_app):
    hour = three_hours_ago()
    site = endpoint(any_app)
    store(any_app, site, check(hour + timedelta(minutes=5), ms=10.0),
          check(hour + timedelta(minutes=35), ok=False))
    store(any_app, site, check(utcnow()))
    assert hour_row(any_app, site, hour) == (2, 1, 10.0, 1, 10.0)

    store(any_app, site, check(hour + timedelta(minutes=50), ms=30.0))  # arrives hours late
    assert hour_row(any_app, site, hour) == (3, 2, 40.0, 2, 30.0)
    assert day_checks(any_app, site) == 4
    with any_app.app_context():
        assert history.uptimes(site)["24h"] == pytest.approx(100.0 * 3 / 4)
        assert sum(b.tally.checks for b in history.chart(site, "7d")) == 4


def test_counting_touches_only_the_results_endpoint_hours(any_app):
    hour = three_hours_ago()
    late, other = endpoint(any_app, "late"), endpoint(any_app, "other")
    for site in (late, other):
        store(any_app, site, check(hour + timedelta(minutes=5)), check(hour + timedelta(minutes=65)))
    store(any_app, late, check(hour + timedelta(minutes=70), ok=False))
    assert hour_row(any_app, late, hour) == (1, 1, 10.0, 1, 10.0)
    assert hour_row(any_app, late, hour + timedelta(hours=1)) == (2, 1, 10.0, 1, 10.0)
    assert hour_row(any_app, other, hour + timedelta(hours=1)) == (1, 1, 10.0, 1, 10.0)


def register(client) -> tuple[str, dict]:
    instance_id = str(uuid.uuid4())
    reply = client.post("/sync/api/register", headers={"X-Cluster-Secret": SECRET}, json={
        "instanceId": instance_id, "instanceName": "dep", "location": "eu-west",
        "syncUrl": "http://127.0.0.1:4002", "failoverOrder": 1, "heartbeatInterval": 5})
    assert reply.status_code == 201, reply.get_json()
    return instance_id, {"Authorization": f"Bearer {reply.get_json()['token']}"}


def heartbeat(instance_id, results):
    return {"instanceId": instance_id, "epoch": 0, "configVersion": 1,
            "systemInfo": {"cpuPercent": 1.0, "memoryPercent": 10.0},
            "connectionStatus": {"primaryReachable": True, "consecutiveFailures": 0},
            "results": results}


def sent(endpoint_id, at, *, ok=True, ms=20.0):
    return {"resultId": str(uuid.uuid4()), "endpointId": endpoint_id, "isOk": ok,
            "responseTime": ms if ok else None, "status": "UP" if ok else "DOWN",
            "failureReason": None if ok else "refused", "checkType": "tcp", "metadata": {},
            "checkedAt": at.isoformat()}


def test_a_late_heartbeat_delivered_twice_is_counted_once(primary):
    client = primary.test_client()
    instance_id, auth = register(client)
    site = endpoint(primary)
    hour = three_hours_ago()
    on_time = heartbeat(instance_id, [sent(site, hour + timedelta(minutes=m)) for m in (1, 2, 3)])
    assert client.put("/sync/api/heartbeat", json=on_time, headers=auth).status_code == 200
    assert hour_row(primary, site, hour, instance_id) == (3, 3, 60.0, 3, 20.0)

    # The outbox of a dependent that lost the primary for hours, sent again
    # because the first reply never reached it.
    backlog = heartbeat(instance_id, [sent(site, hour + timedelta(minutes=40), ms=50.0),
                                      sent(site, hour + timedelta(minutes=41), ok=False)])
    for _ in range(3):
        assert client.put("/sync/api/heartbeat", json=backlog, headers=auth).status_code == 200
    assert stored(primary) == 5
    assert hour_row(primary, site, hour, instance_id) == (5, 4, 110.0, 4, 50.0)
    assert day_checks(primary, site) == 5
    # Half of it again, with one new result: only the new one counts.
    again = heartbeat(instance_id, backlog["results"][:1] + [sent(site, hour + timedelta(minutes=42))])
    assert client.put("/sync/api/heartbeat", json=again, headers=auth).status_code == 200
    assert hour_row(primary, site, hour, instance_id) == (6, 5, 130.0, 5, 50.0)


def in_thread(target) -> threading.Thread:
    errors = []

    def run():
        try:
            target()
        except BaseException as error:  # reported by the test thread
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.errors = errors
    thread.start()
    return thread


def test_concurrent_writers_count_every_result_once(pg_app):
    """Worker processes and sync ingest store at once on PostgreSQL: batches
    of one instance for the same endpoints and hours, results sent twice by
    two writers at once, several instances. The counts equal the raw
    results, and no batch deadlocks."""
    sites = [endpoint(pg_app, f"site-{n}") for n in range(6)]
    hour = three_hours_ago()
    batches = []
    for writer in range(8):
        instance = f"instance-{writer % 3}"
        rows = [result_row(site, check(hour + timedelta(minutes=m, seconds=writer), ok=(m + writer) % 4 != 0,
                                       ms=float(m)), instance_id=instance, location=instance)
                for site in sites[::(1 if writer % 2 else -1)] for m in range(0, 120, 7)]
        batches.append(rows)
    batches.append(list(batches[0]))  # sent again while the first is being stored
    start = threading.Barrier(len(batches))

    def writer(rows):
        with pg_app.app_context():
            start.wait()
            for offset in range(0, len(rows), 25):
                store_results(rows[offset:offset + 25])
                db.session.commit()
            db.session.remove()

    threads = [in_thread(lambda rows=rows: writer(rows)) for rows in batches]
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive() and not thread.errors, thread.errors
    with pg_app.app_context():
        raw = rollups.raw_location_tallies(hour, None, bucket_seconds=3600)
        counted = dict(rollups.location_rows(hour, utcnow(), endpoint_ids=sites))
        assert {k: (t.checks, t.ok_checks, round(t.response_ms_sum, 6)) for k, t in counted.items()} == \
               {k: (t.checks, t.ok_checks, round(t.response_ms_sum, 6)) for k, t in raw.items()}
        assert sum(t.checks for t in raw.values()) == 8 * 6 * 18
        days = rollups.daily_tallies(rollups.day_floor(hour), utcnow(), endpoint_ids=sites)
        assert sum(t.checks for by_day in days.values() for t in by_day.values()) == 8 * 6 * 18


def test_migrations_0005_to_0012_go_up_and_down_on_sqlite(tmp_path):
    application = make_app(tmp_path, serve="none")
    with application.app_context():
        _up_and_down()
        db.engine.dispose()


def test_migrations_0005_to_0012_go_up_and_down_on_postgresql(pg_app):
    with pg_app.app_context():
        _up_and_down()


def _up_and_down():
    directory = str(ROOT / "migrations")
    upgrade(directory=directory)
    tables = set(inspect(db.engine).get_table_names())
    assert "result_location_days" in tables and not {"stale_hours", "result_hours", "rolled_up_hours"} & tables
    downgrade(directory=directory, revision="0005")
    # Hour first in the key: the roll-up looked marks up by hour.
    assert inspect(db.engine).get_pk_constraint("stale_hours")["constrained_columns"] == ["hour", "endpoint_id"]
    downgrade(directory=directory, revision="0004")
    tables = set(inspect(db.engine).get_table_names())
    assert "stale_hours" not in tables and "result_hours" in tables
    upgrade(directory=directory)
    assert "result_location_days" in set(inspect(db.engine).get_table_names())
