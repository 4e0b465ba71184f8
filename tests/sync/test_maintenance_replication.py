"""Maintenance windows are configuration the primary owns: every member
gets them with the configuration pull (a candidate and a member with
failover order 0 alike), changes and deletions follow, and a candidate
promoted during a window holds alerts back as the primary did. A real
primary's sync API on loopback and real members, on SQLite and on
PostgreSQL."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from app.checks import CheckResult
from app.config import ROLE_PRIMARY
from app.extensions import db
from app.models import MaintenanceWindow, NotificationDelivery, StatusChange, utcnow
from app.services import alerts, configuration, maintenance
from app.services.endpoints import create_endpoint
from app.services.notifications import create_service
from app.services.results import record_results
from app.services.sync import primary
from tests.sync.test_replication import cluster, instances, pg_databases, sync, version, webhook  # noqa: F401


def windows(application) -> list[dict]:
    with application.app_context():
        return [{k: v for k, v in maintenance.to_dict(w).items() if k != "updatedAt"}
                for w in maintenance.list_windows()]


def test_every_member_holds_the_primary_s_windows_and_their_changes(cluster):
    primary_app, member = cluster
    now = utcnow()
    with primary_app.app_context():
        create_endpoint({"name": "db", "checkType": "tcp", "target": "127.0.0.1", "port": 9, "group": "Databases"})
        one_off = maintenance.create_window({"title": "Upgrade", "groups": ["Databases"],
                                             "startsAt": now.isoformat(),
                                             "endsAt": (now + timedelta(hours=1)).isoformat()}).id
        maintenance.create_window({"title": "Backups", "endpointIds": [1], "cronExpression": "30 2 * * *",
                                   "timeZone": "Europe/Berlin", "durationMinutes": 45})
    candidate, follower = member("candidate", 1), member("follower", 0)
    for application in (candidate, follower):
        sync(application)
        assert windows(application) == windows(primary_app)
        assert version(application) == version(primary_app)
    with follower.app_context():
        follower_id = configuration.instance_id()
    with primary_app.app_context():
        assert [w["title"] for w in primary.sync_configuration(follower_id)["maintenanceWindows"]] == [
            "Upgrade", "Backups"]

    before = version(primary_app)
    with primary_app.app_context():
        window = maintenance.get_window(one_off)
        maintenance.update_window(window, {"title": "Upgrade to 17", "isActive": False}, partial=True)
        maintenance.delete_window(maintenance.list_windows()[1])
    assert version(primary_app) == before + 2  # each change bumps the version
    for application in (candidate, follower):
        sync(application)
        assert windows(application) == windows(primary_app)
        assert [w["title"] for w in windows(application)] == ["Upgrade to 17"]


def test_a_candidate_promoted_during_a_window_does_not_page(cluster, webhook):
    primary_app, member = cluster
    now = utcnow()
    candidate = member("candidate", 1)
    sync(candidate)  # registered: a member endpoints may name
    with candidate.app_context():
        own_id = configuration.instance_id()
    with primary_app.app_context():
        create_service({"name": "ops", "kind": "webhook", "config": {"url": webhook.url()}, "isDefault": True})
        # Checked by the candidate alone, so its one result decides once it is the primary.
        endpoint_id = create_endpoint({"name": "db", "checkType": "tcp", "target": "127.0.0.1", "port": 9,
                                       "locations": [own_id]}).id
        maintenance.create_window({"title": "Failover drill", "endpointIds": [endpoint_id],
                                   "startsAt": (now - timedelta(minutes=5)).isoformat(),
                                   "endsAt": (now + timedelta(minutes=30)).isoformat()})
    sync(candidate)
    with candidate.app_context():
        configuration.set_role(ROLE_PRIMARY, new_epoch=1, new_primary_url=None)
        db.session.commit()
        assert db.session.execute(select(func.count()).select_from(MaintenanceWindow)).scalar_one() == 1

        record_results([(endpoint_id, CheckResult(is_ok=False, check_type="tcp", failure_reason="refused"))],
                       instance_id=own_id, location="candidate-lab")
        assert alerts.raise_alerts([endpoint_id]) == []
        change = db.session.execute(select(StatusChange)).scalar_one()
        assert change.to_status == "DOWN" and change.suppressed_alert == "down"
        assert "Failover drill" in change.suppressed_by

        # Once the window is over, the alert it held back is this new primary's to send.
        later = now + timedelta(hours=1)
        assert maintenance.release_held_alerts(now=later) == [endpoint_id]
        [delivery_id] = alerts.raise_alerts([endpoint_id], now=later)
        assert alerts.deliver(delivery_id, now=later) == "sent"
        assert db.session.execute(select(func.count()).select_from(NotificationDelivery)).scalar_one() == 1
    assert [p["event"] for p in webhook.payloads] == ["down"]


def test_malformed_windows_from_the_primary_change_nothing_and_name_the_field(app):
    import pytest

    from app.services.sync.replication import InvalidReplica, apply_maintenance_windows

    good = {"id": 4, "title": "Upgrade", "startsAt": "2030-01-01T10:00:00+00:00", "endsAt": "2030-01-01T11:00:00+00:00",
            "cronExpression": None, "timeZone": None, "durationMinutes": None, "endpointIds": [1], "groups": [],
            "isActive": True, "description": None, "createdAt": "2026-12-01T00:00:00+00:00"}
    with app.app_context():
        assert apply_maintenance_windows([good]) == (1, 0, 0)
        db.session.commit()
        with pytest.raises(InvalidReplica) as raised:
            apply_maintenance_windows([{**good, "endpointIds": "all"}])
        db.session.rollback()
        assert "maintenanceWindows.maintenanceWindows.0.endpointIds" in raised.value.errors
        assert [w.title for w in maintenance.list_windows()] == ["Upgrade"]
        assert apply_maintenance_windows([good]) == (0, 0, 0)  # unchanged: nothing written
