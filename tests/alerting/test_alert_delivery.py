"""Alerts travel from a status change to real receivers: one per change,
recovery with its duration, retries with backoff, nothing sent twice.

Results go through ``record_results`` and the check job's alert hook; the
deliver jobs run in an RQ worker against real Redis (embedded and server);
the receivers are a real SMTP server (aiosmtpd) and a real HTTP webhook.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from app.extensions import db
from app.models import NotificationDelivery
from app.services import alerts


def test_it_emails_one_alert_per_status_change(pipeline, smtp_server):
    pipeline.service("apprise", {"url": smtp_server.url()}, isDefault=True)
    endpoint = pipeline.endpoint(name="Billing API")
    went_down = datetime.now(timezone.utc) - timedelta(seconds=130)

    pipeline.record(endpoint, False, "connection refused", at=went_down)
    pipeline.work()
    down = smtp_server.wait_for(1)[0]
    assert down["Subject"] == "[DOWN] Billing API"
    assert down["To"] == "ops@example.org"
    assert "Reason: connection refused" in smtp_server.text(down)

    # Still failing: no new status change, so no new email.
    pipeline.record(endpoint, False, "connection refused", at=went_down + timedelta(seconds=60))
    pipeline.work()

    pipeline.record(endpoint, True, at=went_down + timedelta(seconds=125))
    pipeline.work()
    messages = smtp_server.wait_for(2)
    time.sleep(0.3)  # anything extra would have arrived by now
    assert len(smtp_server.messages) == 2
    up = messages[1]
    assert up["Subject"] == "[UP] Billing API is back up after 2 min 5 s"
    body = smtp_server.text(up)
    assert "It was down for 2 min 5 s." in body
    assert "It had been down because: connection refused" in body



def _only_delivery(pipeline) -> dict:
    rows = pipeline.deliveries()
    assert len(rows) == 1, rows
    return rows[0]


def test_it_posts_down_and_recovery_to_a_webhook(pipeline, webhook):
    pipeline.service("webhook", {"url": webhook.url("/hook?token=abc"), "headers": {"X-Token": "t0ken"}},
                     isDefault=True)
    endpoint = pipeline.endpoint(name="Orders DB", target="127.0.0.1", port=5432)
    went_down = datetime.now(timezone.utc) - timedelta(minutes=5)

    pipeline.record(endpoint, False, "connection refused", at=went_down)
    pipeline.work()
    pipeline.record(endpoint, True, at=went_down + timedelta(seconds=3725))
    pipeline.work()

    assert [r["answered"] for r in webhook.requests] == [200, 200]
    assert webhook.requests[0]["path"] == "/hook?token=abc"
    assert webhook.requests[0]["headers"]["X-Token"] == "t0ken"
    assert webhook.requests[0]["headers"]["Content-Type"] == "application/json"
    down, up = webhook.payloads
    assert down["event"] == "down"
    assert down["endpoint"] == {"id": endpoint, "name": "Orders DB", "target": "127.0.0.1", "checkType": "tcp"}
    assert (down["status"], down["previousStatus"]) == ("DOWN", "PENDING")
    assert down["reason"] == "connection refused"
    assert datetime.fromisoformat(down["downSince"]) == went_down
    assert datetime.fromisoformat(down["occurredAt"]) == went_down
    assert down["durationSeconds"] is None
    assert down["instance"]["location"] == "default" and down["instance"]["id"]
    assert down["title"] == "[DOWN] Orders DB"

    assert up["event"] == "up"
    assert (up["status"], up["previousStatus"]) == ("UP", "DOWN")
    assert up["durationSeconds"] == 3725
    assert datetime.fromisoformat(up["downSince"]) == went_down
    assert up["reason"] == "connection refused"  # why it had been down
    assert up["title"] == "[UP] Orders DB is back up after 1 h 2 min"
    assert {r["status"] for r in pipeline.deliveries()} == {"sent"}


def test_it_does_not_alert_when_a_new_endpoint_comes_up(pipeline, webhook):
    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    endpoint = pipeline.endpoint()
    transitions = pipeline.record(endpoint, True)
    assert [(t.from_status, t.to_status) for t in transitions] == [("PENDING", "UP")]
    pipeline.work()
    assert webhook.requests == [] and pipeline.deliveries() == []


def test_it_retries_after_the_receiver_fails(pipeline, webhook):
    from workers.jobs import alerts as alert_jobs

    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    endpoint = pipeline.endpoint()
    webhook.answer(500)  # then the default 200

    pipeline.record(endpoint, False, "timed out")
    pipeline.work()
    delivery = _only_delivery(pipeline)
    assert delivery["status"] == "pending" and delivery["attempts"] == 1
    assert "HTTP 500" in delivery["lastError"]
    retry_at = datetime.fromisoformat(delivery["nextAttemptAt"])
    assert timedelta(seconds=25) < retry_at - datetime.now(timezone.utc) <= timedelta(seconds=30)

    # Not yet due: the sweep enqueues nothing and the receiver hears nothing.
    assert alert_jobs.sweep()["enqueued"] == 0
    pipeline.work()
    assert len(webhook.requests) == 1

    # 31 s later (a fake "now", passed on to the deliver job the sweep enqueues).
    assert alert_jobs.sweep(now=time.time() + 31)["enqueued"] == 1
    pipeline.work()

    assert [r["answered"] for r in webhook.requests] == [500, 200]
    assert webhook.payloads[0] == webhook.payloads[1]  # the retry sends the same message
    delivery = _only_delivery(pipeline)
    assert delivery["status"] == "sent" and delivery["attempts"] == 2 and delivery["lastError"] is None


def test_it_sends_nothing_twice(pipeline, webhook):
    from workers.jobs import alerts as alert_jobs

    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    endpoint = pipeline.endpoint()
    transitions = pipeline.record(endpoint, False, "refused")
    delivery = _only_delivery(pipeline)

    # The hook replayed (a retried check job) raises nothing new.
    with pipeline.app.app_context():
        alert_jobs.alert_transitions(transitions)
        alerts.raise_alerts([endpoint])
    pipeline.work()  # the queue now holds the same delivery twice
    assert len(webhook.requests) == 1

    # The deliver job run again, and the sweep, find nothing to send.
    assert alert_jobs.deliver(delivery["id"]) == "skipped"
    assert alert_jobs.sweep(now=time.time() + 3600)["enqueued"] == 0
    pipeline.work()
    assert len(webhook.requests) == 1
    assert [(d["dedupeKey"], d["status"]) for d in pipeline.deliveries()] == [
        (f"{delivery['dedupeKey']}", "sent")]


def test_it_lets_only_one_of_two_racing_workers_send(pipeline, webhook):
    from workers.jobs import alerts as alert_jobs

    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    endpoint = pipeline.endpoint()
    pipeline.record(endpoint, False, "refused")
    delivery = _only_delivery(pipeline)
    with pipeline.app.app_context():
        # Another worker's claim holds the row: this one must not send.
        db.session.execute(db.update(NotificationDelivery).values(status="sending",
                                                                  claimed_at=datetime.now(timezone.utc)))
        db.session.commit()
    pipeline.work()
    assert alert_jobs.deliver(delivery["id"]) == "skipped"
    assert webhook.requests == []


def test_it_fails_at_once_when_the_receiver_refuses(pipeline, webhook):
    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    endpoint = pipeline.endpoint()
    webhook.answer(404)

    pipeline.record(endpoint, False, "refused")
    pipeline.work()
    delivery = _only_delivery(pipeline)
    assert delivery["status"] == "failed" and delivery["attempts"] == 1
    assert delivery["lastError"] == f"http://127.0.0.1:{webhook.port} answered HTTP 404 NOT FOUND: status 404"
    with pipeline.app.app_context():
        assert [d.id for d in alerts.failed_deliveries()] == [delivery["id"]]
        assert [d.id for d in alerts.recent_deliveries(10)] == [delivery["id"]]
    from workers.jobs import alerts as alert_jobs

    assert alert_jobs.sweep(now=time.time() + 3600)["enqueued"] == 0
    assert len(webhook.requests) == 1


def test_it_gives_up_after_the_last_attempt_and_can_be_retried(pipeline, webhook):
    from workers.jobs import alerts as alert_jobs

    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    endpoint = pipeline.endpoint()
    webhook.default_status = 503
    pipeline.record(endpoint, False, "refused")
    pipeline.work()

    now = time.time()
    waits = []
    for _ in range(alerts.MAX_ATTEMPTS - 1):
        delivery = _only_delivery(pipeline)
        assert delivery["status"] == "pending"
        due = datetime.fromisoformat(delivery["nextAttemptAt"]).timestamp()
        waits.append(round(due - now))
        now = due
        assert alert_jobs.sweep(now=now)["enqueued"] == 1
        pipeline.work()
    # 30 s after the first try (made a moment before ``now`` was read), then doubling to the cap.
    assert 28 <= waits[0] <= 30 and waits[1:] == [60, 120, 240, 480, 960, 1800]
    delivery = _only_delivery(pipeline)
    assert delivery["status"] == "failed" and delivery["attempts"] == alerts.MAX_ATTEMPTS
    assert delivery["lastError"].endswith(f"(gave up after {alerts.MAX_ATTEMPTS} attempts)")
    assert "HTTP 503" in delivery["lastError"]
    assert len(webhook.requests) == alerts.MAX_ATTEMPTS

    # Someone fixed the receiver and asks for another try from the UI.
    webhook.default_status = 200
    with pipeline.app.app_context():
        assert alerts.retry_delivery(delivery["id"]) is True
        assert alerts.retry_delivery(delivery["id"]) is False  # pending now, not failed
    assert alert_jobs.sweep()["enqueued"] == 1
    pipeline.work()
    assert _only_delivery(pipeline)["status"] == "sent"
    assert len(webhook.requests) == alerts.MAX_ATTEMPTS + 1


def test_it_reminds_while_an_endpoint_stays_down(pipeline, webhook):
    from workers.jobs import alerts as alert_jobs

    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    endpoint = pipeline.endpoint(reminderIntervalMinutes=10)
    quiet = pipeline.endpoint(name="No reminders")
    start = time.time()
    pipeline.record(endpoint, False, "refused")
    pipeline.record(quiet, False, "refused")
    pipeline.work()
    assert [p["event"] for p in webhook.payloads] == ["down", "down"]

    for minutes in (5, 10.5, 11, 15, 20.5, 20.6):
        alert_jobs.sweep(now=start + minutes * 60)
        pipeline.work()
    reminders = [p for p in webhook.payloads if p["event"] == "reminder"]
    assert len(reminders) == 2
    assert all(p["endpoint"]["id"] == endpoint for p in reminders)
    assert [round(p["durationSeconds"] / 60, 1) for p in reminders] == [10.5, 20.5]
    assert reminders[0]["title"] == "[STILL DOWN] Homepage for 10 min 30 s"
    assert reminders[0]["reason"] == "refused"

    # Back up: no more reminders, one recovery alert.
    pipeline.record(endpoint, True)
    pipeline.work()
    alert_jobs.sweep(now=start + 31 * 60)
    pipeline.work()
    assert [p["event"] for p in webhook.payloads][-1] == "up"
    assert len([p for p in webhook.payloads if p["event"] == "reminder"]) == 2


def test_it_raises_alerts_a_dead_check_job_missed(pipeline, webhook):
    from workers.jobs import alerts as alert_jobs

    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    endpoint = pipeline.endpoint()
    # The check job stored the change, then died before its alert hook ran.
    pipeline.record(endpoint, False, "refused", alert=False)
    assert pipeline.deliveries() == []

    assert alert_jobs.sweep() == {"released": 0, "raised": 1, "reminders": 0, "enqueued": 1}
    pipeline.work()
    assert [p["event"] for p in webhook.payloads] == ["down"]


def test_it_alerts_every_enabled_service_of_the_endpoint(pipeline, webhook, smtp_server):
    from app.models import Endpoint
    from app.services import notifications

    hook = pipeline.service("webhook", {"url": webhook.url()})
    mail = pipeline.service("apprise", {"url": smtp_server.url()})
    disabled = pipeline.service("webhook", {"url": webhook.url("/disabled")}, isEnabled=False)
    unrelated = pipeline.service("webhook", {"url": webhook.url("/unrelated")})
    endpoint = pipeline.endpoint(notificationServiceIds=[hook, mail, disabled])
    with pipeline.app.app_context():
        assert db.session.get(Endpoint, endpoint).to_dict()["notificationServiceIds"] == [hook, mail, disabled]
        assert notifications.get_service(unrelated) is not None

    pipeline.record(endpoint, False, "refused")
    pipeline.work()
    assert [r["path"] for r in webhook.requests] == ["/hook"]
    assert smtp_server.wait_for(1)[0]["Subject"] == "[DOWN] Homepage"
    assert sorted(d["serviceId"] for d in pipeline.deliveries()) == [hook, mail]


def test_it_alerts_from_the_check_job_without_sending_there(pipeline, webhook):
    """The whole path: clock, check job on a closed port, notify worker."""
    import socket

    from rq import Queue, SimpleWorker

    from workers.clock import Clock

    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    endpoint = pipeline.endpoint(name="Closed port", port=closed)

    clock = Clock(pipeline.app)
    assert clock.tick(time.time()) == 1
    SimpleWorker([Queue("checks", connection=clock.redis)], connection=clock.redis).work(burst=True)
    # The check job stored the change and enqueued the alert; it sent nothing itself.
    assert webhook.requests == []
    notify = Queue("notify", connection=clock.redis)
    assert notify.count >= 1  # the deliver job, and the clock's first sweep
    pipeline.work()
    [payload] = webhook.payloads
    assert payload["event"] == "down" and payload["endpoint"]["id"] == endpoint
    assert "refused" in payload["reason"].lower()


def test_it_resends_what_a_dead_worker_held_and_prunes_old_deliveries(pipeline, webhook):
    from workers.jobs import alerts as alert_jobs

    pipeline.service("webhook", {"url": webhook.url()}, isDefault=True)
    endpoint = pipeline.endpoint()
    pipeline.record(endpoint, False, "refused", alert=False)
    with pipeline.app.app_context():
        [delivery_id] = alerts.raise_alerts([endpoint])
        # A worker claimed it and died before recording anything.
        db.session.execute(db.update(NotificationDelivery).values(
            status="sending", attempts=1, claimed_at=datetime.now(timezone.utc)))
        db.session.commit()
    assert alert_jobs.sweep(now=time.time() + 60)["released"] == 0  # it may still be sending
    assert alert_jobs.sweep(now=time.time() + 11 * 60)["released"] == 1
    pipeline.work()
    assert [p["event"] for p in webhook.payloads] == ["down"]
    delivery = _only_delivery(pipeline)
    assert delivery["status"] == "sent" and delivery["attempts"] == 2

    # Kept DELIVERY_RETENTION_DAYS (30 by default), then dropped.
    alert_jobs.sweep(now=time.time() + 29 * 86400)
    assert [d["id"] for d in pipeline.deliveries()] == [delivery_id]
    alert_jobs.sweep(now=time.time() + 31 * 86400)
    assert pipeline.deliveries() == []
