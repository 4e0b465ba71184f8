"""Migration 0002 and the alert pipeline on PostgreSQL as well as SQLite."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from app.extensions import db
from tests.conftest import ROOT, make_app


def test_it_migrates_sqlite_up_and_down_through_0002(tmp_path):
    app = make_app(tmp_path, serve="none")
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"), revision="0002")
        schema = inspect(db.engine)
        assert "notification_deliveries" in schema.get_table_names()
        assert "reminder_interval_minutes" in {c["name"] for c in schema.get_columns("endpoints")}
        assert {"dedupe_key"} in [set(u["column_names"]) for u in schema.get_unique_constraints(
            "notification_deliveries")]
        downgrade(directory=str(ROOT / "migrations"), revision="0001")
        schema = inspect(db.engine)
        assert "notification_deliveries" not in schema.get_table_names()
        assert "reminder_interval_minutes" not in {c["name"] for c in schema.get_columns("endpoints")}
        upgrade(directory=str(ROOT / "migrations"))
        db.engine.dispose()


def test_it_raises_and_delivers_alerts_on_postgresql(pg_app, webhook):
    from app.checks import CheckResult
    from app.models import NotificationDelivery
    from app.services import alerts, notifications
    from app.services.endpoints import create_endpoint
    from app.services.results import record_results

    with pg_app.app_context():
        service = notifications.create_service({"name": "Hook", "kind": "webhook", "isDefault": True,
                                                "config": {"url": webhook.url(), "headers": {"X-K": "v"}}})
        endpoint = create_endpoint({"name": "db", "checkType": "tcp", "target": "127.0.0.1", "port": 5432,
                                    "reminderIntervalMinutes": 5})
        went_down = datetime.now(timezone.utc) - timedelta(seconds=10)
        record_results([(endpoint.id, CheckResult(is_ok=False, check_type="tcp", failure_reason="refused",
                                                  checked_at=went_down))], instance_id="i", location="l")
        [delivery_id] = alerts.raise_alerts([endpoint.id])
        assert alerts.raise_alerts([endpoint.id]) == [delivery_id]  # replay: the same row, still pending
        webhook.answer(502)
        assert alerts.deliver(delivery_id) == "pending"
        assert alerts.deliver(delivery_id) == "skipped"  # not due yet
        later = datetime.now(timezone.utc) + timedelta(seconds=31)
        assert alerts.due_deliveries(now=later) == [delivery_id]
        assert alerts.deliver(delivery_id, now=later) == "sent"
        assert alerts.deliver(delivery_id, now=later) == "skipped"

        reminder_ids = alerts.raise_reminders(now=went_down + timedelta(minutes=5, seconds=1))
        assert len(reminder_ids) == 1
        assert alerts.raise_reminders(now=went_down + timedelta(minutes=6)) == reminder_ids
        assert alerts.deliver(reminder_ids[0], now=went_down + timedelta(minutes=6)) == "sent"

        record_results([(endpoint.id, CheckResult(is_ok=True, check_type="tcp", response_time_ms=1.0))],
                       instance_id="i", location="l")
        [up_id] = alerts.raise_alerts([endpoint.id])
        assert alerts.deliver(up_id) == "sent"

        assert [p["event"] for p in webhook.payloads] == ["down", "down", "reminder", "up"]
        assert webhook.payloads[0] == webhook.payloads[1]
        rows = db.session.execute(db.select(NotificationDelivery).order_by(NotificationDelivery.id)).scalars()
        assert [(r.event, r.status, r.attempts, r.notification_service_id) for r in rows] == [
            ("down", "sent", 2, service.id), ("reminder", "sent", 1, service.id), ("up", "sent", 1, service.id)]
