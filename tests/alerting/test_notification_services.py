"""Notification services: validation that names the field, secrets that are
never shown back, default services for new endpoints, and the test send."""
from __future__ import annotations

import json
import socket

import pytest

from app.extensions import db
from app.models import Endpoint, NotificationDelivery, NotificationService
from app.notifiers import SECRET_MASK
from app.services import notifications
from app.services.endpoints import InvalidEndpoint, create_endpoint, update_endpoint
from app.services.notifications import InvalidNotificationService

SECRET_URL = "mailto://alerts:hunter2-pass@mail.example.org?to=ops@example.org"
TCP = {"checkType": "tcp", "target": "127.0.0.1", "port": 9}


def _errors(data) -> dict:
    with pytest.raises(InvalidNotificationService) as caught:
        notifications.create_service(data)
    return caught.value.errors


def test_it_names_the_field_of_each_validation_error(app):
    with app.app_context():
        assert _errors({"kind": "webhook", "config": {"url": "http://127.0.0.1/x"}}) == {"name": "is required"}
        assert set(_errors({"name": "x", "kind": "carrier-pigeon"})) == {"kind"}
        assert "one of apprise, webhook" in _errors({"name": "x", "kind": "pigeon"})["kind"]
        assert _errors({"name": "x", "kind": "webhook", "config": {"url": "ftp://h/x"}}) == {
            "config.url": "must be a URL starting with http:// or https://"}
        assert set(_errors({"name": "x", "kind": "webhook", "config": {}})) == {"config.url"}
        assert set(_errors({"name": "x", "kind": "webhook",
                            "config": {"url": "http://h/", "timeoutSeconds": 0}})) == {"config.timeoutSeconds"}
        assert set(_errors({"name": "x", "kind": "webhook",
                            "config": {"url": "http://h/", "headers": {"Bad Header": "v"}}})) == {"config.headers"}
        assert set(_errors({"name": "x", "kind": "webhook",
                            "config": {"url": "http://h/", "colour": "red"}})) == {"config.colour"}
        assert set(_errors({"name": "x", "kind": "apprise", "config": {"url": "not a url"}})) == {"config.url"}
        # Every problem at once, and never the (possibly secret) input in a message.
        errors = _errors({"name": "", "kind": "apprise", "config": {"url": "nosuchservice://tok3n-secret"}})
        assert set(errors) == {"name", "config.url"}
        assert "tok3n-secret" not in json.dumps(errors)
        assert _errors(["not", "an", "object"]) == {"body": "must be a JSON object"}
        assert _errors({"name": "x", "kind": "webhook", "config": {"url": "http://h/"}, "extra": 1}) == {
            "extra": "is not a field of a notification service"}
        assert db.session.query(NotificationService).count() == 0


def test_it_masks_secrets_in_the_public_view(app):
    with app.app_context():
        mail = notifications.create_service({"name": "Ops mail", "kind": "apprise", "config": {"url": SECRET_URL}})
        hook = notifications.create_service({
            "name": "Hook", "kind": "webhook",
            "config": {"url": "https://hooks.example.org/T0KEN/abc?key=s3cr3t",
                       "headers": {"Authorization": "Bearer b34rer"}, "timeoutSeconds": 5},
        })
        mail_view, hook_view = notifications.public_view(mail), notifications.public_view(hook)
        shown = json.dumps([mail_view, hook_view, [notifications.public_view(s) for s in notifications.list_services()]])
        for secret in ("hunter2", "T0KEN", "s3cr3t", "b34rer"):
            assert secret not in shown
        assert mail_view["config"] == {"url": f"mailto://{SECRET_MASK}", "timeoutSeconds": 30.0}
        assert mail_view["secretsSet"] == ["url"] and mail_view["kind"] == "apprise"
        assert hook_view["config"] == {"url": f"https://hooks.example.org/{SECRET_MASK}",
                                       "headers": {"Authorization": SECRET_MASK}, "timeoutSeconds": 5.0}
        assert hook_view["secretsSet"] == ["headers", "url"]
        assert hook_view["isEnabled"] is True and hook_view["isDefault"] is False
        assert hook_view["endpointCount"] == 0


def test_it_keeps_secrets_that_an_update_omits_or_sends_back_masked(app):
    with app.app_context():
        hook = notifications.create_service({
            "name": "Hook", "kind": "webhook",
            "config": {"url": "https://hooks.example.org/T0KEN", "headers": {"Authorization": "Bearer b34rer"}},
        })
        # The edit form sends back what public_view showed, with one change.
        shown = notifications.public_view(hook)
        notifications.update_service(hook, {"name": "Renamed", "config": {**shown["config"], "timeoutSeconds": 3}})
        assert hook.name == "Renamed"
        assert hook.config == {"url": "https://hooks.example.org/T0KEN",
                               "headers": {"Authorization": "Bearer b34rer"}, "timeoutSeconds": 3.0}
        # Omitted secrets are kept too; a header added keeps the masked one.
        notifications.update_service(hook, {"config": {"url": "", "headers": {"Authorization": SECRET_MASK,
                                                                                "X-Env": "prod"}}})
        assert hook.config["url"] == "https://hooks.example.org/T0KEN"
        assert hook.config["headers"] == {"Authorization": "Bearer b34rer", "X-Env": "prod"}
        # A new value replaces the secret.
        notifications.update_service(hook, {"config": {"url": "https://other.example.org/N3W"}})
        assert hook.config["url"] == "https://other.example.org/N3W"
        assert hook.config["headers"] == {"Authorization": "Bearer b34rer", "X-Env": "prod"}
        # Changing the kind keeps nothing of the old secrets.
        with pytest.raises(InvalidNotificationService) as caught:
            notifications.update_service(hook, {"kind": "apprise", "config": {}})
        assert set(caught.value.errors) == {"config.url"}
        db.session.rollback()
        assert db.session.get(NotificationService, hook.id).kind == "webhook"


def test_it_gives_new_endpoints_the_default_services(app):
    with app.app_context():
        default = notifications.create_service(
            {"name": "Default", "kind": "apprise", "config": {"url": SECRET_URL}, "isDefault": True})
        other = notifications.create_service(
            {"name": "Other", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/"}})
        assert [s.id for s in notifications.default_services()] == [default.id]

        plain = create_endpoint({"name": "plain", **TCP})
        assert plain.to_dict()["notificationServiceIds"] == [default.id]
        chosen = create_endpoint({"name": "chosen", "notificationServiceIds": [other.id], **TCP})
        assert chosen.to_dict()["notificationServiceIds"] == [other.id]
        silent = create_endpoint({"name": "silent", "notificationServiceIds": [], **TCP})
        assert silent.to_dict()["notificationServiceIds"] == []

        with pytest.raises(InvalidEndpoint) as caught:
            create_endpoint({"name": "bad", "notificationServiceIds": [other.id, 999], **TCP})
        assert caught.value.errors == {"notificationServiceIds": "no notification service with id 999"}
        with pytest.raises(InvalidEndpoint) as caught:
            create_endpoint({"name": "bad", "notificationServiceIds": "all", **TCP})
        assert set(caught.value.errors) == {"notificationServiceIds"}
        assert db.session.query(Endpoint).count() == 3

        # A patch that names no services leaves them; one that does replaces them.
        update_endpoint(plain, {"intervalSeconds": 30}, partial=True)
        assert plain.to_dict()["notificationServiceIds"] == [default.id]
        update_endpoint(plain, {"notificationServiceIds": [default.id, other.id]}, partial=True)
        assert plain.to_dict()["notificationServiceIds"] == [default.id, other.id]
        notifications.set_endpoint_services(plain, [other.id])
        assert db.session.get(Endpoint, plain.id).to_dict()["notificationServiceIds"] == [other.id]
        with pytest.raises(InvalidNotificationService):
            notifications.set_endpoint_services(plain, [12345])
        assert notifications.public_view(other)["endpointCount"] == 2


def test_it_keeps_the_reminder_interval_as_configuration(app):
    with app.app_context():
        endpoint = create_endpoint({"name": "remind", "reminderIntervalMinutes": 30, **TCP})
        assert endpoint.to_dict()["reminderIntervalMinutes"] == 30
        update_endpoint(endpoint, {"name": "renamed"}, partial=True)
        assert endpoint.reminder_interval_minutes == 30
        with pytest.raises(InvalidEndpoint) as caught:
            update_endpoint(endpoint, {"reminderIntervalMinutes": 0}, partial=True)
        assert set(caught.value.errors) == {"reminderIntervalMinutes"}
        assert "reminder_interval_minutes" not in Endpoint.RUNTIME_FIELDS


def test_it_sends_a_test_message_to_a_webhook(app, webhook):
    with app.app_context():
        service = notifications.create_service({"name": "Hook", "kind": "webhook",
                                                "config": {"url": webhook.url()}, "isEnabled": False})
        delivery = notifications.send_test(service.id)
        assert delivery.status == "sent" and delivery.event == "test" and delivery.last_error is None
        [payload] = webhook.payloads
        assert payload["event"] == "test" and payload["status"] == "TEST"
        assert payload["title"] == "[TEST] Test notification for Hook"
        assert [d.id for d in notifications.recent_deliveries(5)] == [delivery.id]
        assert notifications.failed_deliveries() == []


def test_it_sends_a_test_email(app, smtp_server):
    with app.app_context():
        service = notifications.create_service({"name": "Mail", "kind": "apprise",
                                                "config": {"url": smtp_server.url(to="oncall@example.org")}})
        assert notifications.send_test(service.id).status == "sent"
    [message] = smtp_server.wait_for(1)
    assert message["Subject"] == "[TEST] Test notification for Mail"
    assert message["To"] == "oncall@example.org" and message["From"] == "monitor@example.org"
    assert "Delivery works." in smtp_server.text(message)


def test_it_reports_why_a_test_send_failed(app):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with app.app_context():
        hook = notifications.create_service({"name": "Hook", "kind": "webhook",
                                             "config": {"url": f"http://127.0.0.1:{closed}/hook?token=s3cr3t"}})
        mail_url = f"mailto://127.0.0.1:{closed}?from=m@example.org&to=a@example.org"
        mail = notifications.create_service({"name": "Mail", "kind": "apprise", "config": {"url": mail_url}})
        failed = notifications.send_test(hook.id)
        assert failed.status == "failed"
        assert failed.last_error.startswith(f"could not connect to http://127.0.0.1:{closed}: ")
        assert "s3cr3t" not in failed.last_error
        failed_mail = notifications.send_test(mail.id)
        assert failed_mail.status == "failed" and "connection error" in failed_mail.last_error.lower()
        with pytest.raises(LookupError):
            notifications.send_test(9999)


def test_it_deletes_a_service_with_its_deliveries(app, webhook):
    with app.app_context():
        service = notifications.create_service({"name": "Hook", "kind": "webhook", "config": {"url": webhook.url()}})
        endpoint = create_endpoint({"name": "e", "notificationServiceIds": [service.id], **TCP})
        notifications.send_test(service.id)
        notifications.delete_service(service)
        assert db.session.query(NotificationDelivery).count() == 0
        assert db.session.get(Endpoint, endpoint.id).to_dict()["notificationServiceIds"] == []
        assert notifications.list_services() == []


def test_it_lists_the_kinds_a_form_can_offer(app):
    kinds = {k["kind"]: k for k in notifications.kinds()}
    assert set(kinds) == {"apprise", "webhook"}
    assert kinds["webhook"]["secretFields"] == ["headers", "url"]
    assert kinds["webhook"]["fields"] == ["url", "headers", "timeoutSeconds"]
    assert kinds["apprise"]["fields"] == ["url", "timeoutSeconds"]
