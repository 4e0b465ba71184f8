"""Maintenance windows against the database: which endpoints a window covers
(by id and by group, a group's later members too, switched-off windows
none), uptime with maintenance left out, a held-back alert released only
once and not after the status moved, and the command line. On SQLite, and on
PostgreSQL when TEST_DATABASE_URL is set."""
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from app.checks import CheckResult
from app.extensions import db
from app.models import AggregatedResult, Endpoint, MaintenanceWindow, StatusChange
from app.services import configuration, consensus, maintenance
from app.services.endpoints import create_endpoint
from app.services.results import record_results


@pytest.fixture(params=["sqlite", "postgresql"])
def db_app(request):
    return request.getfixturevalue("app" if request.param == "sqlite" else "pg_app")


def endpoint(name, group=None) -> Endpoint:
    return create_endpoint({"name": name, "checkType": "tcp", "target": "127.0.0.1", "port": 9, "group": group})


def window(**fields) -> MaintenanceWindow:
    now = datetime.now(timezone.utc)
    return maintenance.create_window({"title": "Upgrade", "startsAt": (now - timedelta(minutes=5)).isoformat(),
                                      "endsAt": (now + timedelta(minutes=55)).isoformat(), **fields})


def test_a_window_covers_its_endpoints_and_its_groups_current_members(db_app):
    with db_app.app_context():
        orders, stock, shop = endpoint("orders", "Databases"), endpoint("stock", "Databases"), endpoint("shop")
        covering = window(groups=["Databases"])
        window(title="Off", endpointIds=[shop.id], isActive=False)
        assert set(maintenance.endpoints_in_maintenance(
            {e.id: e.group_name for e in (orders, stock, shop)})) == {orders.id, stock.id}
        later = endpoint("archive", "Databases")  # joins the group after the window was made
        assert maintenance.in_maintenance(later).id == covering.id
        assert maintenance.in_maintenance(shop) is None
        assert [w.title for w, _ in maintenance.active_windows()] == ["Upgrade"]
        # After its end nothing is covered, and the window says it is over.
        after = datetime.now(timezone.utc) + timedelta(hours=2)
        assert maintenance.endpoints_in_maintenance({orders.id: "Databases", stock.id: "Databases"}, after) == {}
        answer = maintenance.to_dict(covering, after)
        assert answer["inProgress"] is False and answer["nextStartsAt"] is None


def test_uptime_leaves_time_in_maintenance_out(db_app):
    with db_app.app_context():
        site = endpoint("site")
        now = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
        # UP for 24 h but DOWN from 08:00 to 10:00; a window covers 08:00 to 09:00.
        for at, status in ((now - timedelta(hours=30), "UP"), (now - timedelta(hours=4), "DOWN"),
                           (now - timedelta(hours=2), "UP")):
            db.session.add(AggregatedResult(endpoint_id=site.id, computed_at=at, consensus=status, locations_up=0,
                                            locations_down=0, locations_total=1, is_change=True))
        db.session.commit()
        day = timedelta(hours=24)
        assert consensus.uptimes([site.id], now, spans=(day,))[site.id][day] == pytest.approx(100 * 22 / 24)
        maintenance.create_window({"title": "Patch", "endpointIds": [site.id],
                                   "startsAt": "2026-06-01T08:00:00Z", "endsAt": "2026-06-01T09:00:00Z"})
        assert consensus.uptimes([site.id], now, spans=(day,))[site.id][day] == pytest.approx(100 * 22 / 23)


def test_a_held_back_alert_is_released_once_and_not_after_the_status_moved(db_app):
    with db_app.app_context():
        own = configuration.instance_id()
        site, other = endpoint("site"), endpoint("other")
        window(endpointIds=[site.id, other.id])
        for e in (site, other):
            record_results([(e.id, CheckResult(is_ok=False, check_type="tcp", failure_reason="refused"))],
                           instance_id=own, location="lab")
        changes = db.session.execute(select(StatusChange.suppressed_alert, StatusChange.alert_event)).all()
        assert changes == [("down", None), ("down", None)]
        # Still inside the window: nothing is released.
        assert maintenance.release_held_alerts() == []
        # "other" recovered before the window ended: nothing is owed for it.
        record_results([(other.id, CheckResult(is_ok=True, check_type="tcp", response_time_ms=1.0))],
                       instance_id=own, location="lab")
        later = datetime.now(timezone.utc) + timedelta(hours=2)
        assert maintenance.release_held_alerts(now=later) == [site.id]
        assert maintenance.release_held_alerts(now=later) == []
        released = db.session.execute(select(StatusChange).where(StatusChange.alert_event.is_not(None))).scalar_one()
        assert (released.endpoint_id, released.to_status, released.alert_event) == (site.id, "DOWN", "down")
        assert db.session.get(Endpoint, site.id).alerted_status == "DOWN"


def test_the_command_line_adds_lists_and_removes_windows(db_app):
    with db_app.app_context():
        endpoint("orders", "Databases")
    runner = db_app.test_cli_runner()
    added = runner.invoke(args=["maintenance", "add", "--title", "Backups", "--cron", "30 2 * * *",
                                "--duration", "45", "--time-zone", "Europe/Berlin", "--group", "Databases"])
    assert added.exit_code == 0, added.output
    assert "added maintenance window 1: Backups (cron 30 2 * * * (Europe/Berlin) for 45 min)" in added.output
    one_off = runner.invoke(args=["maintenance", "add", "--title", "Upgrade", "--start", "2030-01-01T10:00",
                                  "--end", "2030-01-01T12:00", "--endpoint", "1"])
    assert one_off.exit_code == 0, one_off.output
    listing = runner.invoke(args=["maintenance", "list"]).output
    assert "Backups" in listing and "group Databases" in listing and "2030-01-01T10:00 to 2030-01-01T12:00" in listing
    bad = runner.invoke(args=["maintenance", "add", "--title", "Bad", "--cron", "99 * * * *", "--duration", "5",
                              "--time-zone", "Nowhere/City", "--endpoint", "7"])
    assert bad.exit_code == 2
    assert "cronExpression: is not a valid cron expression" in bad.output
    assert "timeZone: is not a known time zone" in bad.output
    assert "endpointIds: names endpoints that do not exist: 7" in bad.output
    assert runner.invoke(args=["maintenance", "remove", "1"]).exit_code == 0
    assert runner.invoke(args=["maintenance", "remove", "1"]).exit_code == 2
    with db_app.app_context():
        assert [w.title for w in maintenance.list_windows()] == ["Upgrade"]


def test_notices_announce_windows_in_progress_and_coming_soon(db_app):
    with db_app.app_context():
        orders, shop = endpoint("orders", "Databases"), endpoint("shop", "Shop")
        now = datetime.now(timezone.utc)
        window(title="Now", description="Rolling restart", groups=["Databases"])
        maintenance.create_window({"title": "Soon", "endpointIds": [orders.id],
                                   "startsAt": (now + timedelta(days=2)).isoformat(),
                                   "endsAt": (now + timedelta(days=2, hours=1)).isoformat()})
        maintenance.create_window({"title": "Far", "endpointIds": [orders.id],
                                   "startsAt": (now + timedelta(days=30)).isoformat(),
                                   "endsAt": (now + timedelta(days=30, hours=1)).isoformat()})
        found = maintenance.notices({orders.id: "Databases"})
        assert [(n.title, n.in_progress) for n in found] == [("Now", True), ("Soon", False)]
        assert found[0].description == "Rolling restart"
        assert maintenance.notices({shop.id: "Shop"}) == []
