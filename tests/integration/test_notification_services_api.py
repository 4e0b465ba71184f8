"""Notification services over the JSON API: CRUD, secrets masked in every
answer and kept when sent back masked, validation naming every field with
nothing stored, viewers and dependents refused, and the test send, against a
real webhook receiver on loopback. On SQLite, and on PostgreSQL when
TEST_DATABASE_URL is set."""
import base64
import json

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import NotificationDelivery, NotificationService
from app.notifiers import SECRET_MASK
from tests.peers.webhook import WebhookReceiver

ADMIN = ("admin@example.org", "correct horse battery")
VIEWER = ("viewer@example.org", "viewer password 123")
SECRETS = ("T0KEN-s3cret", "b34rer-s3cret", "hunter2-s3cret")
APPRISE = {"name": "Ops mail", "kind": "apprise",
           "config": {"url": "mailto://alerts:hunter2-s3cret@mail.example.org?to=ops@example.org"}}
BASE = "/api/v1/notification-services"


def basic(email, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


@pytest.fixture(params=["sqlite", "postgresql"])
def api_app(request):
    """A standalone app with an administrator, on SQLite, then on PostgreSQL."""
    from app.services.accounts import create_user

    application = request.getfixturevalue("app" if request.param == "sqlite" else "pg_app")
    with application.app_context():
        create_user(*ADMIN, is_admin=True)
    return application


@pytest.fixture
def api(api_app):
    return api_app.test_client()


@pytest.fixture
def admin():
    return basic(*ADMIN)


@pytest.fixture
def webhook():
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


def hook_service(receiver, **fields):
    return {"name": "Hook", "kind": "webhook",
            "config": {"url": receiver.url("/hook?token=T0KEN-s3cret"),
                       "headers": {"Authorization": "Bearer b34rer-s3cret"}, "timeoutSeconds": 5},
            **fields}


def count_services(app):
    with app.app_context():
        return db.session.execute(select(func.count(NotificationService.id))).scalar_one()


def stored(app, service_id):
    with app.app_context():
        service = db.session.get(NotificationService, service_id)
        return None if service is None else {"name": service.name, "kind": service.kind, "config": service.config,
                                             "isEnabled": service.is_enabled, "isDefault": service.is_default}


def assert_masked(answer, receiver):
    assert not any(secret in json.dumps(answer) for secret in SECRETS), answer
    if answer["kind"] == "webhook":
        assert answer["config"]["url"] == f"http://127.0.0.1:{receiver.port}/{SECRET_MASK}"
        assert answer["config"]["headers"] == {"Authorization": SECRET_MASK}
        assert answer["secretsSet"] == ["headers", "url"]
    else:
        assert answer["config"]["url"] == f"mailto://{SECRET_MASK}"
        assert answer["secretsSet"] == ["url"]


def test_it_requires_authentication(api):
    response = api.get(BASE)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


def test_it_creates_reads_lists_updates_and_deletes_a_service(api_app, api, admin, webhook):
    created = api.post(BASE, json=hook_service(webhook), headers=admin)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    url = created.headers["Location"]
    assert url.endswith(f"{BASE}/{body['id']}")
    assert (body["name"], body["kind"], body["isEnabled"], body["isDefault"]) == ("Hook", "webhook", True, False)
    assert body["config"]["timeoutSeconds"] == 5.0

    assert api.get(url, headers=admin).get_json() == body
    assert api.post(BASE, json=APPRISE, headers=admin).status_code == 201
    listed = api.get(BASE, headers=admin).get_json()["notificationServices"]
    assert [s["name"] for s in listed] == ["Hook", "Ops mail"]

    patched = api.patch(url, json={"name": "Renamed", "isDefault": True}, headers=admin)
    assert patched.status_code == 200, patched.get_json()
    assert (patched.get_json()["name"], patched.get_json()["isDefault"]) == ("Renamed", True)
    assert patched.get_json()["config"] == body["config"]

    # PUT replaces: what it omits takes its default, except secrets, which are kept.
    replaced = api.put(url, json={"name": "Replaced", "kind": "webhook"}, headers=admin)
    assert replaced.status_code == 200, replaced.get_json()
    assert (replaced.get_json()["name"], replaced.get_json()["isDefault"]) == ("Replaced", False)
    assert replaced.get_json()["config"]["timeoutSeconds"] == 10.0
    assert stored(api_app, body["id"])["config"]["url"] == webhook.url("/hook?token=T0KEN-s3cret")

    assert api.delete(url, headers=admin).status_code == 204
    assert api.get(url, headers=admin).status_code == 404
    assert stored(api_app, body["id"]) is None
    assert count_services(api_app) == 1


def test_it_masks_secrets_in_every_answer(api_app, api, admin, webhook):
    answers = []
    for data in (hook_service(webhook), APPRISE):
        created = api.post(BASE, json=data, headers=admin)
        assert created.status_code == 201, created.get_json()
        url = created.headers["Location"]
        answers += [created.get_json(), api.get(url, headers=admin).get_json(),
                    api.patch(url, json={"isEnabled": False}, headers=admin).get_json(),
                    api.put(url, json={**data, "config": {}}, headers=admin).get_json()]
    answers += api.get(BASE, headers=admin).get_json()["notificationServices"]
    assert len(answers) == 10
    for answer in answers:
        assert_masked(answer, webhook)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_sending_an_answer_back_keeps_the_stored_secrets(api_app, api, admin, webhook, method):
    url = api.post(BASE, json=hook_service(webhook), headers=admin).headers["Location"]
    shown = api.get(url, headers=admin).get_json()
    before = stored(api_app, shown["id"])
    sent = {key: shown[key] for key in ("name", "kind", "config", "isEnabled", "isDefault")}
    response = api.open(url, method=method, json={**sent, "name": "Renamed"}, headers=admin)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {**shown, "name": "Renamed", "updatedAt": response.get_json()["updatedAt"]}
    assert stored(api_app, shown["id"]) == {**before, "name": "Renamed"}


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_a_new_secret_replaces_the_stored_one(api_app, api, admin, webhook, method):
    url = api.post(BASE, json=hook_service(webhook), headers=admin).headers["Location"]
    service_id = int(url.rsplit("/", 1)[1])
    config = {"url": webhook.url("/other?token=N3W"), "headers": {"Authorization": SECRET_MASK, "X-Env": "prod"}}
    response = api.open(url, method=method, json={"name": "Hook", "kind": "webhook", "config": config},
                        headers=admin)
    assert response.status_code == 200, response.get_json()
    assert "N3W" not in json.dumps(response.get_json())
    assert stored(api_app, service_id)["config"]["url"] == webhook.url("/other?token=N3W")
    assert stored(api_app, service_id)["config"]["headers"] == {"Authorization": "Bearer b34rer-s3cret",
                                                                "X-Env": "prod"}


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"name": ""}, {"name"}),
        ({"name": None}, {"name"}),
        ({"kind": "carrier-pigeon"}, {"kind"}),
        ({"config": {"url": "ftp://127.0.0.1/x"}}, {"config.url"}),
        ({"config": {"url": "http://127.0.0.1/", "timeoutSeconds": 0}}, {"config.timeoutSeconds"}),
        ({"config": {"url": "http://127.0.0.1/", "headers": {"Bad Header": "v"}}}, {"config.headers"}),
        ({"config": {"url": "http://127.0.0.1/", "colour": "red"}}, {"config.colour"}),
        ({"colour": "red"}, {"colour"}),
        ({"isEnabled": "sometimes"}, {"isEnabled"}),
        ({"name": "", "isDefault": "maybe", "config": {"url": "ftp://127.0.0.1/x"}},
         {"name", "isDefault", "config.url"}),
    ],
)
def test_it_rejects_bad_fields_naming_each_and_stores_nothing(api_app, api, admin, webhook, change, fields):
    response = api.post(BASE, json={**hook_service(webhook), **change}, headers=admin)
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["error"] == "validation_error"
    assert set(body["fields"]) == fields, body
    assert all(field in body["message"] for field in fields)
    assert not any(secret in json.dumps(body) for secret in SECRETS)
    assert count_services(api_app) == 0


@pytest.mark.parametrize(("method", "change", "fields"), [
    ("PATCH", {"config": {"timeoutSeconds": 500}}, {"config.timeoutSeconds"}),
    ("PATCH", {"name": "", "isEnabled": "sometimes"}, {"name", "isEnabled"}),
    # Another kind gets none of the old kind's settings, secrets least of all.
    ("PATCH", {"kind": "apprise"}, {"config.url"}),
    ("PUT", {"name": "Hook"}, {"kind"}),
    ("PUT", {"kind": "webhook", "config": {"url": "ftp://127.0.0.1/x"}}, {"name", "config.url"}),
])
def test_an_invalid_update_changes_nothing(api_app, api, admin, webhook, method, change, fields):
    url = api.post(BASE, json=hook_service(webhook), headers=admin).headers["Location"]
    service_id = int(url.rsplit("/", 1)[1])
    before = stored(api_app, service_id)
    response = api.open(url, method=method, json=change, headers=admin)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "validation_error"
    assert set(response.get_json()["fields"]) == fields, response.get_json()
    assert stored(api_app, service_id) == before
    assert count_services(api_app) == 1


def test_a_viewer_reads_but_cannot_change_or_test(api_app, api, admin, webhook):
    from app.services.accounts import create_user

    with api_app.app_context():
        create_user(*VIEWER, is_admin=False)
    viewer = basic(*VIEWER)
    url = api.post(BASE, json=hook_service(webhook), headers=admin).headers["Location"]
    service_id = int(url.rsplit("/", 1)[1])
    before = stored(api_app, service_id)
    assert_masked(api.get(url, headers=viewer).get_json(), webhook)
    assert len(api.get(BASE, headers=viewer).get_json()["notificationServices"]) == 1
    for method, path, body in [("POST", BASE, hook_service(webhook)), ("PUT", url, hook_service(webhook)),
                               ("PATCH", url, {"name": "Mine"}), ("DELETE", url, None),
                               ("POST", f"{url}/test", {})]:
        response = api.open(path, method=method, json=body, headers=viewer)
        assert response.status_code == 403, (method, path)
        assert response.get_json()["error"] == "forbidden"
    assert stored(api_app, service_id) == before
    assert count_services(api_app) == 1
    assert webhook.requests == []


def test_a_dependent_refuses_changes_and_tests(api_app, api, admin, webhook):
    from app.services import configuration

    url = api.post(BASE, json=hook_service(webhook), headers=admin).headers["Location"]
    service_id = int(url.rsplit("/", 1)[1])
    before = stored(api_app, service_id)
    with api_app.app_context():
        configuration.set_role("dependent", new_epoch=1, new_primary_url="http://primary.test:3002")
        db.session.commit()
    assert api.get(url, headers=admin).status_code == 200
    for method, path, body in [("POST", BASE, hook_service(webhook)), ("PATCH", url, {"name": "Mine"}),
                               ("DELETE", url, None), ("POST", f"{url}/test", {})]:
        response = api.open(path, method=method, json=body, headers=admin)
        assert response.status_code == 409, (method, path)
        assert response.get_json()["error"] == "read_only"
        assert "http://primary.test:3002" in response.get_json()["message"]
    assert stored(api_app, service_id) == before
    assert webhook.requests == []


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/987654", None), ("PUT", "/987654", APPRISE), ("PATCH", "/987654", {"name": "x"}),
    ("DELETE", "/987654", None), ("POST", "/987654/test", {}),
])
def test_an_unknown_id_is_a_404_naming_it(api, admin, method, path, body):
    response = api.open(BASE + path, method=method, json=body, headers=admin)
    assert response.status_code == 404
    assert response.get_json() == {"error": "not_found", "message": "no notification service with id 987654"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_it_refuses_a_body_that_is_not_sent_as_json(api_app, api, admin, webhook, content_type):
    url = api.post(BASE, json=hook_service(webhook), headers=admin).headers["Location"]
    service_id = int(url.rsplit("/", 1)[1])
    before = stored(api_app, service_id)
    headers = {**admin, **({"Content-Type": content_type} if content_type else {})}
    for method, path, body in [("POST", BASE, APPRISE), ("PUT", url, APPRISE), ("PATCH", url, {"name": "x"}),
                               ("POST", f"{url}/test", {})]:
        response = api.open(path, method=method, data=json.dumps(body), headers=headers)
        assert response.status_code == 415, (method, path)
        assert response.get_json()["error"] == "unsupported_media_type"
    assert stored(api_app, service_id) == before
    assert count_services(api_app) == 1
    assert webhook.requests == []


def test_it_refuses_malformed_and_oversized_bodies(api_app, api, admin, webhook):
    response = api.post(BASE, data="{not json", content_type="application/json", headers=admin)
    assert response.status_code == 400 and response.get_json()["fields"] == {"body": "must be a JSON object"}
    response = api.post(BASE, json=[APPRISE], headers=admin)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_json"
    huge = {**hook_service(webhook), "name": "x" * (2 * 1024 * 1024)}
    assert api.post(BASE, json=huge, headers=admin).status_code == 413
    assert count_services(api_app) == 0


def test_a_test_send_reaches_the_webhook_and_is_recorded(api_app, api, webhook):
    from app.services.accounts import create_api_key

    with api_app.app_context():
        _, key = create_api_key(ADMIN[0], "ci")
    bearer = {"Authorization": f"Bearer {key}"}
    url = api.post(BASE, json=hook_service(webhook, isEnabled=False), headers=bearer).headers["Location"]
    service_id = int(url.rsplit("/", 1)[1])

    response = api.post(f"{url}/test", json={}, headers=bearer)
    assert response.status_code == 200, response.get_json()
    sent = response.get_json()
    assert (sent["status"], sent["lastError"], sent["event"]) == ("sent", None, "test")
    assert sent["serviceId"] == service_id and sent["sentAt"] is not None
    [request] = webhook.requests  # a disabled service can be tested too
    assert request["path"] == "/hook?token=T0KEN-s3cret"
    assert request["headers"]["Authorization"] == "Bearer b34rer-s3cret"
    assert (request["json"]["event"], request["json"]["status"]) == ("test", "TEST")

    webhook.answer(500)
    failed = api.post(f"{url}/test", json={}, headers=bearer).get_json()
    assert failed["status"] == "failed"
    assert "500" in failed["lastError"] and "T0KEN" not in failed["lastError"]
    assert len(webhook.requests) == 2
    with api_app.app_context():
        rows = db.session.execute(select(NotificationDelivery.id, NotificationDelivery.status)
                                  .order_by(NotificationDelivery.id)).all()
    assert [tuple(row) for row in rows] == [(sent["id"], "sent"), (failed["id"], "failed")]


@pytest.mark.parametrize(("body", "status", "field"), [
    (None, 400, "body"),
    ({"to": "someone"}, 400, "to"),
])
def test_a_test_send_takes_an_empty_json_object(api_app, api, admin, webhook, body, status, field):
    url = api.post(BASE, json=hook_service(webhook), headers=admin).headers["Location"]
    response = api.post(f"{url}/test", json=body, headers=admin)
    assert response.status_code == status
    assert field in response.get_json()["fields"]
    assert webhook.requests == []
    with api_app.app_context():
        assert db.session.execute(select(func.count(NotificationDelivery.id))).scalar_one() == 0
