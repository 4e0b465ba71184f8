"""Results stored after their hour was rolled up (a dependent's outbox after
an outage) are folded into that hour by the next roll-up: counted once,
never lost, on SQLite and PostgreSQL."""
from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import timedelta

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, inspect, select

from app.checks import CheckResult
from app.extensions import db
from app.models import ResponseTime, ResultHour, StaleHour, utcnow
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


def roll_up(app, now=None):
    with app.app_context():
        mark = rollups.roll_up(now)
        db.session.remove()
        return mark


def hour_row(app, endpoint_id, hour):
    """(checks, ok checks, response time sum, count, max) rolled up for the hour."""
    with app.app_context():
        row = db.session.get(ResultHour, (endpoint_id, hour))
        out = None if row is None else (row.checks, row.ok_checks, row.response_ms_sum,
                                        row.response_ms_count, row.response_ms_max)
        db.session.remove()
        return out


def marks(app):
    with app.app_context():
        out = sorted((m.endpoint_id, m.hour) for m in db.session.execute(select(StaleHour)).scalars())
        db.session.remove()
        return out


def stored(app) -> int:
    with app.app_context():
        count = db.session.execute(select(func.count()).select_from(ResponseTime)).scalar_one()
        db.session.remove()
        return count


def test_a_late_result_is_counted_in_its_rolled_up_hour(any_app, monkeypatch):
    from workers import jobs
    from workers.jobs.checks import roll_up_results

    monkeypatch.setattr(jobs, "_app", any_app)
    hour = three_hours_ago()
    site = endpoint(any_app)
    store(any_app, site, check(hour + timedelta(minutes=5), ms=10.0),
          check(hour + timedelta(minutes=35), ok=False))
    roll_up_results()
    assert hour_row(any_app, site, hour) == (2, 1, 10.0, 1, 10.0)

    store(any_app, site, check(hour + timedelta(minutes=50), ms=30.0))  # arrives after the roll-up
    assert marks(any_app) == [(site, hour)]
    assert hour_row(any_app, site, hour) == (2, 1, 10.0, 1, 10.0)  # not yet

    roll_up_results()
    assert hour_row(any_app, site, hour) == (3, 2, 40.0, 2, 30.0)
    assert marks(any_app) == []
    with any_app.app_context():
        assert history.uptimes(site)["24h"] == pytest.approx(100.0 * 2 / 3)
        assert sum(b.tally.checks for b in history.chart(site, "7d")) == 3


def test_recomputing_touches_only_the_marked_endpoint_hours(any_app):
    hour = three_hours_ago()
    late, other = endpoint(any_app, "late"), endpoint(any_app, "other")
    for site in (late, other):
        store(any_app, site, check(hour + timedelta(minutes=5)), check(hour + timedelta(minutes=65)))
    roll_up(any_app)
    store(any_app, late, check(hour + timedelta(minutes=70), ok=False))
    assert marks(any_app) == [(late, hour + timedelta(hours=1))]
    roll_up(any_app)
    assert hour_row(any_app, late, hour) == (1, 1, 10.0, 1, 10.0)
    assert hour_row(any_app, late, hour + timedelta(hours=1)) == (2, 1, 10.0, 1, 10.0)
    assert hour_row(any_app, other, hour + timedelta(hours=1)) == (1, 1, 10.0, 1, 10.0)
    assert marks(any_app) == []


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
    roll_up(primary)
    assert hour_row(primary, site, hour) == (3, 3, 60.0, 3, 20.0)

    # The outbox of a dependent that lost the primary for hours, sent again
    # because the first reply never reached it.
    backlog = heartbeat(instance_id, [sent(site, hour + timedelta(minutes=40), ms=50.0),
                                      sent(site, hour + timedelta(minutes=41), ok=False)])
    for _ in range(2):
        assert client.put("/sync/api/heartbeat", json=backlog, headers=auth).status_code == 200
    assert stored(primary) == 5
    assert marks(primary) == [(site, hour)]
    roll_up(primary)
    assert hour_row(primary, site, hour) == (5, 4, 110.0, 4, 50.0)

    # Replayed again after the roll-up: marked again, still counted once.
    assert client.put("/sync/api/heartbeat", json=backlog, headers=auth).status_code == 200
    assert marks(primary) == [(site, hour)]
    roll_up(primary)
    assert hour_row(primary, site, hour) == (5, 4, 110.0, 4, 50.0)
    assert marks(primary) == []


def test_results_on_time_leave_no_marks(primary):
    client = primary.test_client()
    instance_id, auth = register(client)
    site = endpoint(primary)
    store(primary, site, check(three_hours_ago()))
    mark = roll_up(primary)
    assert mark > three_hours_ago()
    store(primary, site, check(utcnow()), check(mark))  # the watermark's own hour is not rolled up
    now = heartbeat(instance_id, [sent(site, utcnow()) for _ in range(3)])
    assert len(client.put("/sync/api/heartbeat", json=now, headers=auth).get_json()["acknowledged"]) == 3
    assert marks(primary) == []
    assert stored(primary) == 6


def test_hours_past_raw_retention_keep_their_roll_up(any_app):
    """Their raw results are pruned, so recomputing would lose them."""
    any_app.config["SETTINGS"] = dataclasses.replace(any_app.config["SETTINGS"], result_retention_days=1)
    old = rollups.hour_floor(utcnow()) - timedelta(days=2)
    site = endpoint(any_app)
    store(any_app, site, check(old + timedelta(minutes=1)), check(old + timedelta(minutes=2)))
    roll_up(any_app)
    assert hour_row(any_app, site, old) == (2, 2, 20.0, 2, 10.0)
    with any_app.app_context():
        db.session.execute(db.delete(ResponseTime))  # what prune_results does a day later
        db.session.commit()
    store(any_app, site, check(old + timedelta(minutes=3)))
    assert marks(any_app) == [(site, old)]
    roll_up(any_app)
    assert hour_row(any_app, site, old) == (2, 2, 20.0, 2, 10.0)
    assert marks(any_app) == []


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


def test_a_roll_up_waits_for_results_being_stored(any_app):
    """The raw results a roll-up reads include every insert that read the
    old watermark: it waits for them to commit."""
    site = endpoint(any_app)
    first = rollups.hour_floor(utcnow()) - timedelta(hours=5)
    store(any_app, site, check(first), check(first + timedelta(hours=1)))
    assert roll_up(any_app, first + timedelta(hours=1, minutes=15)) == first + timedelta(hours=1)
    with any_app.app_context():
        # Stored on time for the hour after the watermark, not committed yet.
        on_time = check(first + timedelta(hours=1, minutes=30), ms=30.0)
        store_results([result_row(site, on_time, instance_id="local", location="here")])
        roller = in_thread(lambda: roll_up(any_app, first + timedelta(hours=2, minutes=15)))
        roller.join(0.5)
        assert roller.is_alive()  # held off while the insert is open
        db.session.commit()
    roller.join(30)
    assert not roller.is_alive() and not roller.errors
    assert hour_row(any_app, site, first + timedelta(hours=1)) == (2, 2, 40.0, 2, 30.0)
    assert marks(any_app) == []


def test_results_stored_during_a_roll_up_are_marked(any_app):
    """An insert waits for a running roll-up, then sees its watermark and
    marks the hour it just rolled up."""
    site = endpoint(any_app)
    first = rollups.hour_floor(utcnow()) - timedelta(hours=5)
    store(any_app, site, check(first), check(first + timedelta(hours=1)))
    roll_up(any_app, first + timedelta(hours=1, minutes=15))
    with any_app.app_context():
        rollups._lock_out_ingest(shared=False)  # a roll-up under way
        storer = in_thread(lambda: store(any_app, site, check(first + timedelta(hours=1, minutes=30), ms=30.0)))
        storer.join(0.5)
        assert storer.is_alive()  # held off until the roll-up commits
        assert rollups.roll_up(first + timedelta(hours=2, minutes=15)) == first + timedelta(hours=2)
    storer.join(30)
    assert not storer.is_alive() and not storer.errors
    assert hour_row(any_app, site, first + timedelta(hours=1)) == (1, 1, 10.0, 1, 10.0)
    assert marks(any_app) == [(site, first + timedelta(hours=1))]
    roll_up(any_app, first + timedelta(hours=2, minutes=15))
    assert hour_row(any_app, site, first + timedelta(hours=1)) == (2, 2, 40.0, 2, 30.0)


def test_migration_0005_goes_up_and_down_on_sqlite(tmp_path):
    application = make_app(tmp_path, serve="none")
    with application.app_context():
        _up_and_down()
        db.engine.dispose()


def test_migration_0005_goes_up_and_down_on_postgresql(pg_app):
    with pg_app.app_context():
        _up_and_down()


def _up_and_down():
    directory = str(ROOT / "migrations")
    upgrade(directory=directory)
    assert {"stale_hours", "result_hours"} <= set(inspect(db.engine).get_table_names())
    # Hour first in the key: the roll-up looks marks up by hour.
    assert inspect(db.engine).get_pk_constraint("stale_hours")["constrained_columns"] == ["hour", "endpoint_id"]
    downgrade(directory=directory, revision="0004")
    tables = set(inspect(db.engine).get_table_names())
    assert "stale_hours" not in tables and "result_hours" in tables
    upgrade(directory=directory)
    assert "stale_hours" in set(inspect(db.engine).get_table_names())
