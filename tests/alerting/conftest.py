"""Fixtures for alert delivery: a real SMTP server, a real webhook receiver,
and a pipeline that drives results through the alert hook and an RQ worker."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from app.extensions import db
from tests.peers.smtp import SmtpServer
from tests.peers.webhook import WebhookReceiver


@pytest.fixture
def smtp_server():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def webhook():
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


class Pipeline:
    """Results in, alerts out, the way the check job and worker do it."""

    def __init__(self, app):
        self.app = app

    def endpoint(self, **fields) -> int:
        from app.services.endpoints import create_endpoint

        data = {"name": "Homepage", "checkType": "tcp", "target": "127.0.0.1", "port": 9,
                "intervalSeconds": 60, "timeoutSeconds": 2, **fields}
        with self.app.app_context():
            return create_endpoint(data).id

    def service(self, kind: str, config: dict, **fields) -> int:
        from app.services.notifications import create_service

        with self.app.app_context():
            return create_service({"name": f"{kind} service", "kind": kind, "config": config, **fields}).id

    def record(self, endpoint_id: int, ok: bool, reason: str | None = None, *, at: datetime | None = None,
               alert: bool = True):
        """Store one result as the check job does, then call its alert hook."""
        from app.checks import CheckResult
        from app.services.results import record_results
        from workers.jobs.alerts import alert_transitions

        result = CheckResult(is_ok=ok, check_type="tcp", response_time_ms=1.0 if ok else None,
                             failure_reason=reason, checked_at=at or datetime.now(timezone.utc))
        with self.app.app_context():
            transitions = record_results([(endpoint_id, result)], instance_id="here", location="Lab")
            if alert:
                alert_transitions(transitions)
        return transitions

    def work(self) -> None:
        """Run every job on the notify queue with an RQ worker, then stop."""
        from rq import SimpleWorker

        from app.services import queues

        with self.app.app_context():
            queue = queues.queue(queues.NOTIFY_QUEUE)
        SimpleWorker([queue], connection=queues.connection()).work(burst=True)

    def deliveries(self) -> list[dict]:
        from app.models import NotificationDelivery

        with self.app.app_context():
            rows = db.session.execute(db.select(NotificationDelivery).order_by(NotificationDelivery.id)).scalars()
            return [{**row.to_dict(), "dedupeKey": row.dedupe_key, "payload": row.payload} for row in rows]


@pytest.fixture
def pipeline(app, redis_url, monkeypatch):
    """The app wired to real Redis, with jobs running against it."""
    from workers import jobs

    monkeypatch.setattr(jobs, "_app", app)
    return Pipeline(app)


def ago(**delta) -> datetime:
    return datetime.now(timezone.utc) - timedelta(**delta)
