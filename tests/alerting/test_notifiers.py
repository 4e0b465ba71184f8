"""Notifiers on their own: what the webhook treats as worth retrying, the
message text, and the payload's round trip through a delivery row."""
from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from app.notifiers import (
    NOTIFIERS,
    AlertMessage,
    DeliveryError,
    WebhookNotifier,
    format_duration,
    notifier_for,
)

DOWN_AT = datetime(2026, 11, 28, 9, 30, tzinfo=timezone.utc)


def _message(event="down", **fields) -> AlertMessage:
    base = dict(event=event, endpoint_id=7, endpoint_name="Shop", target="https://shop.example.org/",
                check_type="http", status="DOWN", previous_status="UP", occurred_at=DOWN_AT,
                reason="HTTP 502", down_since=DOWN_AT, instance_id="i-1", instance_name="eu-1",
                location="Frankfurt")
    return AlertMessage(**{**base, **fields})


@pytest.mark.parametrize("status, retryable", [(500, True), (503, True), (429, True), (408, True),
                                               (400, False), (401, False), (404, False), (410, False),
                                               (301, False)])
def test_it_says_which_webhook_answers_are_worth_retrying(webhook, status, retryable):
    webhook.answer(status)
    notifier = notifier_for("webhook", {"url": webhook.url()})
    with pytest.raises(DeliveryError) as caught:
        notifier.send(_message())
    assert caught.value.retryable is retryable
    assert f"answered HTTP {status}" in caught.value.reason


def test_it_retries_a_webhook_that_does_not_answer_in_time():
    # A listener that accepts and never answers.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    held = []
    thread = threading.Thread(target=lambda: held.append(server.accept()), daemon=True)
    thread.start()
    try:
        notifier = notifier_for("webhook", {"url": f"http://127.0.0.1:{port}/hook", "timeoutSeconds": 0.3})
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            notifier.send(_message())
        assert time.monotonic() - started < 3
        assert caught.value.retryable is True
        assert caught.value.reason == f"http://127.0.0.1:{port} did not answer within 0.3 s"
    finally:
        for conn, _ in held:
            conn.close()
        server.close()


def test_it_says_what_happened_in_words():
    down = _message()
    assert down.title() == "[DOWN] Shop"
    assert down.body().splitlines() == [
        "Shop (https://shop.example.org/) is DOWN.",
        "Reason: HTTP 502",
        "Down since: 2026-11-28T09:30:00+00:00",
        "Checked from: Frankfurt (eu-1)",
        "At: 2026-11-28T09:30:00+00:00",
    ]
    up = _message("up", status="UP", previous_status="DOWN", duration_seconds=90061,
                  occurred_at=DOWN_AT + timedelta(seconds=90061))
    assert up.title() == "[UP] Shop is back up after 1 d 1 h"
    assert "It was down for 1 d 1 h." in up.body()
    reminder = _message("reminder", duration_seconds=1800)
    assert reminder.title() == "[STILL DOWN] Shop for 30 min"
    assert [format_duration(s) for s in (0, 59, 60, 61, 3600, 3725)] == [
        "0 s", "59 s", "1 min", "1 min 1 s", "1 h", "1 h 2 min"]


def test_it_rebuilds_the_same_message_from_its_payload():
    for message in (_message(), _message("up", duration_seconds=12.5), _message("test", endpoint_id=None)):
        assert AlertMessage.from_payload(message.to_payload()) == message


def test_it_refuses_to_send_with_settings_it_cannot_use():
    with pytest.raises(DeliveryError) as caught:
        notifier_for("pigeon", {})
    assert caught.value.retryable is False
    with pytest.raises(DeliveryError) as caught:
        notifier_for("webhook", {"url": "gopher://x"})
    assert caught.value.retryable is False
    assert caught.value.reason == ("the service's settings are invalid: "
                                   "url: must be a URL starting with http:// or https://")
    assert set(NOTIFIERS) == {"apprise", "webhook"} and NOTIFIERS["webhook"] is WebhookNotifier


def test_it_reports_an_apprise_failure_as_retryable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    notifier = notifier_for("apprise", {"url": f"json://127.0.0.1:{closed}/alerts", "timeoutSeconds": 5})
    with pytest.raises(DeliveryError) as caught:
        notifier.send(_message())
    assert caught.value.retryable is True
    assert caught.value.reason


def test_it_posts_through_apprise_json(webhook):
    # apprise's own json:// service, to a real receiver: any apprise service works the same way.
    notifier = notifier_for("apprise", {"url": f"json://127.0.0.1:{webhook.port}/alerts"})
    notifier.send(_message())
    [request] = webhook.requests
    assert request["path"] == "/alerts"
    assert request["json"]["title"] == "[DOWN] Shop"
    assert request["json"]["type"] == "failure"
    assert "Reason: HTTP 502" in request["json"]["message"]
