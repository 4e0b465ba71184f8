"""Maintenance windows hold alerts back, through the real alert path: results
go through ``record_results`` and the check job's hook, the sweep and the
deliver jobs run in an RQ worker on real Redis, and a real webhook receiver
on loopback hears what is sent."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from app.extensions import db
from app.models import Endpoint, StatusChange
from app.services import maintenance
from workers.jobs import alerts as alert_jobs


def _window(pipeline, **fields) -> int:
    now = datetime.now(timezone.utc)
    data = {"title": "Database upgrade", "startsAt": (now - timedelta(minutes=10)).isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(), **fields}
    with pipeline.app.app_context():
        return maintenance.create_window(data).id


def _changes(pipeline, endpoint_id) -> list[StatusChange]:
    with pipeline.app.app_context():
        rows = db.session.execute(db.select(StatusChange).where(StatusChange.endpoint_id == endpoint_id)
                                  .order_by(StatusChange.id)).scalars().all()
        db.session.expunge_all()
        return rows


def _after_the_window() -> float:
    return time.time() + 2 * 3600


def test_it_holds_back_an_alert_in_a_window_and_sends_one_outside(pipeline, webhook):
    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    in_window = pipeline.endpoint(name="Orders DB", group="Databases")
    outside = pipeline.endpoint(name="Shop")
    _window(pipeline, groups=["Databases"])

    pipeline.record(in_window, False, "connection refused")
    pipeline.record(outside, False, "HTTP 502")
    pipeline.work()

    assert [r["json"]["endpoint"]["name"] for r in webhook.requests] == ["Shop"]
    change = _changes(pipeline, in_window)[-1]
    assert (change.from_status, change.to_status, change.alert_event) == ("PENDING", "DOWN", None)
    assert change.suppressed_alert == "down"
    assert "“Database upgrade”" in change.suppressed_by
    # The sweep inside the window sends nothing for it either.
    alert_jobs.sweep()
    pipeline.work()
    assert len(webhook.requests) == 1
    with pipeline.app.app_context():
        assert db.session.get(Endpoint, in_window).status == "DOWN"  # the consensus is recorded as usual


def test_it_alerts_once_when_the_window_ends_with_the_endpoint_still_down(pipeline, webhook):
    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    endpoint = pipeline.endpoint(name="Orders DB")
    _window(pipeline, endpointIds=[endpoint])
    pipeline.record(endpoint, False, "connection refused")
    pipeline.work()
    assert webhook.requests == []

    later = _after_the_window()
    alert_jobs.sweep(now=later)
    pipeline.work()
    alert_jobs.sweep(now=later + 20)  # a second sweep owes nothing more
    pipeline.work()

    assert len(webhook.requests) == 1
    sent = webhook.requests[0]["json"]
    assert (sent["event"], sent["status"], sent["previousStatus"]) == ("down", "DOWN", "PENDING")
    assert sent["reason"].startswith("connection refused; still DOWN after maintenance window")
    # Still DOWN later: no repeat.
    pipeline.record(endpoint, False, "connection refused",
                    at=datetime.fromtimestamp(later + 30, timezone.utc))
    pipeline.work()
    assert len(webhook.requests) == 1


def test_it_sends_nothing_when_the_endpoint_recovers_inside_the_window(pipeline, webhook):
    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    endpoint = pipeline.endpoint(name="Orders DB")
    _window(pipeline, endpointIds=[endpoint])
    pipeline.record(endpoint, True)
    pipeline.record(endpoint, False, "connection refused")
    pipeline.record(endpoint, True)
    alert_jobs.sweep(now=_after_the_window())
    pipeline.work()
    assert webhook.requests == []
    assert [c.suppressed_alert for c in _changes(pipeline, endpoint)] == [None, "down", None]


def test_it_sends_the_recovery_after_the_window_when_the_down_was_alerted_before(pipeline, webhook):
    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    endpoint = pipeline.endpoint(name="Orders DB")
    pipeline.record(endpoint, True, at=datetime.now(timezone.utc) - timedelta(minutes=14))
    pipeline.record(endpoint, False, "disk full", at=datetime.now(timezone.utc) - timedelta(minutes=12))
    pipeline.work()
    assert [r["json"]["event"] for r in webhook.requests] == ["down"]

    _window(pipeline, endpointIds=[endpoint])  # the fix is made in a window
    pipeline.record(endpoint, True)
    pipeline.work()
    assert [r["json"]["event"] for r in webhook.requests] == ["down"]

    alert_jobs.sweep(now=_after_the_window())
    pipeline.work()
    assert [r["json"]["event"] for r in webhook.requests] == ["down", "up"]
    assert webhook.requests[1]["json"]["reason"] == "disk full"


def test_an_inactive_window_holds_nothing_back(pipeline, webhook):
    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    endpoint = pipeline.endpoint(name="Orders DB")
    _window(pipeline, endpointIds=[endpoint], isActive=False)
    pipeline.record(endpoint, False, "connection refused")
    pipeline.work()
    assert [r["json"]["event"] for r in webhook.requests] == ["down"]


def test_reminders_wait_while_the_endpoint_is_in_a_window(pipeline, webhook):
    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    endpoint = pipeline.endpoint(name="Orders DB", reminderIntervalMinutes=5)
    pipeline.record(endpoint, True, at=datetime.now(timezone.utc) - timedelta(minutes=14))
    pipeline.record(endpoint, False, "disk full", at=datetime.now(timezone.utc) - timedelta(minutes=12))
    pipeline.work()
    assert [r["json"]["event"] for r in webhook.requests] == ["down"]
    _window(pipeline, endpointIds=[endpoint])
    alert_jobs.sweep()
    pipeline.work()
    assert [r["json"]["event"] for r in webhook.requests] == ["down"]
    alert_jobs.sweep(now=_after_the_window())
    pipeline.work()
    assert [r["json"]["event"] for r in webhook.requests] == ["down", "reminder"]
