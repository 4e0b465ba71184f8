"""The JSON API: authentication, validation (400 naming the field, nothing
stored), CRUD, results, and the configuration version."""
import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import Endpoint, ResponseTime, utcnow
from app.services import configuration

HTTP_ENDPOINT = {
    "name": "Homepage",
    "checkType": "http",
    "target": "http://127.0.0.1:9/",
    "intervalSeconds": 30,
    "timeoutSeconds": 5,
    "options": {"expected_status_codes": ["200-299"]},
}


def count_endpoints(app):
    with app.app_context():
        return db.session.execute(select(func.count(Endpoint.id))).scalar_one()


def test_it_requires_authentication(client):
    response = client.get("/api/v1/endpoints")
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


def test_it_refuses_a_wrong_password(client, user):
    import base64

    bad = base64.b64encode(b"admin@example.org:wrong password!").decode()
    assert client.get("/api/v1/endpoints", headers={"Authorization": f"Basic {bad}"}).status_code == 401


def test_it_accepts_an_api_key_until_it_is_revoked(app, client, user):
    from app.services.accounts import create_api_key, revoke_api_key

    with app.app_context():
        row, key = create_api_key(user, "ci")
        key_id = row.id
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/endpoints", headers=headers).status_code == 200
    assert client.get("/api/v1/endpoints", headers={"Authorization": f"Bearer {key}x"}).status_code == 401
    with app.app_context():
        revoke_api_key(key_id)
    assert client.get("/api/v1/endpoints", headers=headers).status_code == 401


def test_it_creates_reads_updates_and_deletes_an_endpoint(client, auth_headers):
    created = client.post("/api/v1/endpoints", json=HTTP_ENDPOINT, headers=auth_headers)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["status"] == "PENDING"
    assert body["options"] == {"expected_status_codes": ["200-299"]}
    url = created.headers["Location"]

    assert client.get(url, headers=auth_headers).get_json()["name"] == "Homepage"

    patched = client.patch(url, json={"name": "Home", "failureThreshold": 3}, headers=auth_headers)
    assert patched.status_code == 200
    assert (patched.get_json()["name"], patched.get_json()["failureThreshold"]) == ("Home", 3)
    assert patched.get_json()["target"] == HTTP_ENDPOINT["target"]

    replaced = client.put(url, json={**HTTP_ENDPOINT, "name": "Replaced"}, headers=auth_headers)
    assert replaced.get_json()["name"] == "Replaced"
    assert replaced.get_json()["failureThreshold"] == 1

    listed = client.get("/api/v1/endpoints?search=repl", headers=auth_headers).get_json()["endpoints"]
    assert [e["name"] for e in listed] == ["Replaced"]

    assert client.delete(url, headers=auth_headers).status_code == 204
    assert client.get(url, headers=auth_headers).status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"checkType": "smtp"}, "checkType"),
        ({"target": "127.0.0.1/no-scheme"}, "target"),
        ({"target": "http://[::1/"}, "target"),
        ({"intervalSeconds": 2}, "intervalSeconds"),
        ({"intervalSeconds": "often"}, "intervalSeconds"),
        ({"timeoutSeconds": 60}, "timeoutSeconds"),
        ({"failureThreshold": 0}, "failureThreshold"),
        ({"port": 80}, "port"),
        ({"colour": "red"}, "colour"),
        ({"options": {"method": "BREW"}}, "options.method"),
        ({"options": {"nonsense": 1}}, "options.nonsense"),
    ],
)
def test_it_rejects_bad_fields_and_stores_nothing(app, client, auth_headers, change, field):
    response = client.post("/api/v1/endpoints", json={**HTTP_ENDPOINT, **change}, headers=auth_headers)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "validation_error"
    assert field in body["fields"], body
    assert field in body["message"]
    assert count_endpoints(app) == 0


def test_it_requires_a_port_for_tcp_and_a_host_target(app, client, auth_headers):
    tcp = {"name": "db", "checkType": "tcp", "target": "127.0.0.1"}
    response = client.post("/api/v1/endpoints", json=tcp, headers=auth_headers)
    assert response.status_code == 400 and "port" in response.get_json()["fields"]
    response = client.post("/api/v1/endpoints", json={**tcp, "target": "tcp://db", "port": 5432},
                           headers=auth_headers)
    assert response.status_code == 400 and "target" in response.get_json()["fields"]
    assert client.post("/api/v1/endpoints", json={**tcp, "port": 5432}, headers=auth_headers).status_code == 201


def test_it_rejects_a_body_that_is_not_a_json_object(app, client, auth_headers):
    response = client.post("/api/v1/endpoints", data="{not json", content_type="application/json",
                           headers=auth_headers)
    assert response.status_code == 400
    response = client.post("/api/v1/endpoints", json=[1, 2], headers=auth_headers)
    assert response.status_code == 400
    assert response.get_json()["fields"] == {"body": "must be a JSON object"}
    assert count_endpoints(app) == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_it_refuses_a_json_body_sent_as_another_content_type(app, client, auth_headers, content_type):
    # What a cross-site form can send without asking first, with the browser's cached basic auth.
    import json

    headers = {**auth_headers, **({"Content-Type": content_type} if content_type else {})}
    response = client.post("/api/v1/endpoints", data=json.dumps(HTTP_ENDPOINT), headers=headers)
    assert response.status_code == 415
    assert response.get_json()["error"] == "unsupported_media_type"
    assert "Content-Type: application/json" in response.get_json()["message"]
    assert count_endpoints(app) == 0


def test_it_refuses_an_update_sent_as_another_content_type(client, auth_headers):
    import json

    url = client.post("/api/v1/endpoints", json=HTTP_ENDPOINT, headers=auth_headers).headers["Location"]
    response = client.patch(url, data=json.dumps({"name": "changed"}), content_type="text/plain",
                            headers=auth_headers)
    assert response.status_code == 415
    assert client.get(url, headers=auth_headers).get_json()["name"] == "Homepage"


def test_it_accepts_json_with_a_charset(app, client, auth_headers):
    import json

    response = client.post("/api/v1/endpoints", data=json.dumps(HTTP_ENDPOINT),
                           content_type="application/json; charset=utf-8", headers=auth_headers)
    assert response.status_code == 201, response.get_json()


def test_it_rejects_an_oversized_body(app, client, auth_headers):
    huge = {**HTTP_ENDPOINT, "name": "x" * (2 * 1024 * 1024)}
    response = client.post("/api/v1/endpoints", json=huge, headers=auth_headers)
    assert response.status_code == 413
    assert count_endpoints(app) == 0


def test_it_keeps_the_stored_endpoint_when_an_update_is_invalid(client, auth_headers):
    url = client.post("/api/v1/endpoints", json=HTTP_ENDPOINT, headers=auth_headers).headers["Location"]
    response = client.patch(url, json={"name": "ok", "intervalSeconds": 1}, headers=auth_headers)
    assert response.status_code == 400
    assert client.get(url, headers=auth_headers).get_json()["name"] == "Homepage"


def test_it_lists_results_newest_first(app, client, auth_headers):
    endpoint_id = client.post("/api/v1/endpoints", json=HTTP_ENDPOINT, headers=auth_headers).get_json()["id"]
    from datetime import timedelta

    from app.checks import CheckResult
    from app.services.results import record_results

    now = utcnow()
    with app.app_context():
        record_results([
            (endpoint_id, CheckResult(is_ok=True, check_type="http", response_time_ms=12.5,
                                      checked_at=now - timedelta(minutes=2))),
            (endpoint_id, CheckResult(is_ok=False, check_type="http", failure_reason="HTTP 500",
                                      checked_at=now - timedelta(minutes=1))),
        ], instance_id="local", location="here")
    body = client.get(f"/api/v1/endpoints/{endpoint_id}/results?limit=10", headers=auth_headers).get_json()
    assert [r["status"] for r in body["results"]] == ["DOWN", "UP"]
    assert body["results"][0]["failureReason"] == "HTTP 500"
    assert client.get(f"/api/v1/endpoints/{endpoint_id}/results?limit=0",
                      headers=auth_headers).status_code == 400
    assert client.get(f"/api/v1/endpoints/{endpoint_id}/results?since=yesterday",
                      headers=auth_headers).status_code == 400


def test_it_bumps_the_config_version_on_configuration_changes_only(app, client, auth_headers):
    with app.app_context():
        start = configuration.config_version()
    url = client.post("/api/v1/endpoints", json=HTTP_ENDPOINT, headers=auth_headers).headers["Location"]
    client.patch(url, json={"name": "renamed"}, headers=auth_headers)
    with app.app_context():
        assert configuration.config_version() == start + 2
        endpoint = db.session.execute(select(Endpoint)).scalar_one()
        endpoint.status = "UP"  # runtime state, written by workers
        endpoint.consecutive_successes = 4
        db.session.commit()
        assert configuration.config_version() == start + 2
    client.delete(url, headers=auth_headers)
    with app.app_context():
        assert configuration.config_version() == start + 3


def test_it_deletes_an_endpoints_results_with_it(app, client, auth_headers):
    from app.checks import CheckResult
    from app.services.results import record_results

    endpoint_id = client.post("/api/v1/endpoints", json=HTTP_ENDPOINT, headers=auth_headers).get_json()["id"]
    with app.app_context():
        record_results([(endpoint_id, CheckResult(is_ok=True, check_type="http"))],
                       instance_id="local", location="here")
    client.delete(f"/api/v1/endpoints/{endpoint_id}", headers=auth_headers)
    with app.app_context():
        assert db.session.execute(select(func.count(ResponseTime.id))).scalar_one() == 0


def test_it_limits_password_guessing_like_the_sign_in_page(client, user):
    import base64

    from app.services import login_throttle

    bad = base64.b64encode(b"admin@example.org:wrong password!").decode()
    good = base64.b64encode(b"admin@example.org:correct horse battery").decode()
    for _ in range(login_throttle.MAX_PER_IP_AND_EMAIL):
        assert client.get("/api/v1/endpoints", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    # Locked for a while, even with the right password.
    assert client.get("/api/v1/endpoints", headers={"Authorization": f"Basic {good}"}).status_code == 401


def test_it_never_shows_secrets_back(app, client, auth_headers, caplog):
    import logging

    caplog.set_level(logging.INFO)
    kafka = {"name": "orders", "checkType": "kafka_consumer", "target": "127.0.0.1:9092",
             "options": {"topic": "orders", "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                         "sasl_username": "monitor", "sasl_password": "hunter2-secret"}}
    created = client.post("/api/v1/endpoints", json=kafka, headers=auth_headers)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["options"]["sasl_password"] == "********"
    http = client.post("/api/v1/endpoints", json={**HTTP_ENDPOINT, "target": "https://bob:pa55word@127.0.0.1:8443/x"},
                       headers=auth_headers)
    assert http.status_code == 201
    assert "pa55word" not in caplog.text and "hunter2-secret" not in caplog.text
    from app.checks import public_target

    assert public_target("https://bob:pa55word@127.0.0.1:8443/x") == "https://127.0.0.1:8443/x"
    assert public_target("http://[::1]:80/") == "http://[::1]:80/"


SECRET_HTTP = {
    **HTTP_ENDPOINT, "name": "Private", "target": "https://bob:pa55word@127.0.0.1:8443/x",
    "options": {"headers": {"Authorization": "Bearer auth-s3cret", "Proxy-Authorization": "Basic proxy-s3cret",
                            "Cookie": "session=cookie-s3cret", "X-Api-Key": "key-s3cret",
                            "x-auth-token": "token-s3cret", "X-Client-Secret": "secret-s3cret",
                            "X-Db-Password": "password-s3cret", "X-Probe": "monitor"}},
}
SECRET_KAFKA = {"name": "orders", "checkType": "kafka_consumer", "target": "127.0.0.1:9092",
                "options": {"topic": "orders", "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                            "sasl_username": "monitor", "sasl_password": "hunter2-secret"}}
# What a client may send back of an answer (the rest is read-only state).
INPUT_FIELDS = ("name", "checkType", "target", "port", "options", "intervalSeconds", "timeoutSeconds",
                "failureThreshold", "successThreshold", "isPaused", "group", "reminderIntervalMinutes",
                "notificationServiceIds")


def stored(app, endpoint_id):
    with app.app_context():
        endpoint = db.session.get(Endpoint, endpoint_id)
        return endpoint.target, endpoint.options


def test_it_shows_no_url_credentials_or_secret_headers(app, client, auth_headers):
    created = client.post("/api/v1/endpoints", json=SECRET_HTTP, headers=auth_headers)
    assert created.status_code == 201, created.get_json()
    url = created.headers["Location"]
    for answer in (created.get_json(), client.get(url, headers=auth_headers).get_json(),
                   client.get("/api/v1/endpoints", headers=auth_headers).get_json()["endpoints"][0]):
        assert "s3cret" not in str(answer) and "pa55word" not in str(answer)
        assert answer["target"] == "https://127.0.0.1:8443/x"
        assert answer["options"]["headers"] == {
            "Authorization": "********", "Proxy-Authorization": "********", "Cookie": "********",
            "X-Api-Key": "********", "x-auth-token": "********", "X-Client-Secret": "********",
            "X-Db-Password": "********", "X-Probe": "monitor"}
    assert stored(app, created.get_json()["id"]) == (SECRET_HTTP["target"], SECRET_HTTP["options"])


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("endpoint", [SECRET_HTTP, SECRET_KAFKA], ids=["http", "kafka"])
def test_sending_an_answer_back_keeps_the_secrets_it_hides(app, client, auth_headers, method, endpoint):
    url = client.post("/api/v1/endpoints", json=endpoint, headers=auth_headers).headers["Location"]
    shown = client.get(url, headers=auth_headers).get_json()
    changed = {**{k: shown[k] for k in INPUT_FIELDS}, "name": "Renamed"}
    response = client.open(url, method=method, json=changed, headers=auth_headers)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {**shown, "name": "Renamed", "updatedAt": response.get_json()["updatedAt"]}
    assert stored(app, shown["id"]) == (endpoint["target"], endpoint["options"])


def test_it_replaces_or_drops_url_credentials_when_told(app, client, auth_headers):
    url = client.post("/api/v1/endpoints", json=SECRET_HTTP, headers=auth_headers).headers["Location"]
    endpoint_id = int(url.rsplit("/", 1)[1])
    assert client.patch(url, json={"target": "https://alice:n3w@127.0.0.1:8443/x"},
                        headers=auth_headers).status_code == 200
    assert stored(app, endpoint_id)[0] == "https://alice:n3w@127.0.0.1:8443/x"
    assert client.patch(url, json={"target": "https://@127.0.0.1:8443/x"}, headers=auth_headers).status_code == 200
    assert stored(app, endpoint_id)[0] == "https://127.0.0.1:8443/x"
    # Another URL is taken as sent: no credentials carried over to it.
    client.patch(url, json={"target": "https://carol:pw@127.0.0.1:8443/x"}, headers=auth_headers)
    assert client.patch(url, json={"target": "https://127.0.0.1:8443/y"}, headers=auth_headers).status_code == 200
    assert stored(app, endpoint_id)[0] == "https://127.0.0.1:8443/y"


def test_it_replaces_a_secret_header_sent_with_a_new_value(app, client, auth_headers):
    url = client.post("/api/v1/endpoints", json=SECRET_HTTP, headers=auth_headers).headers["Location"]
    headers = {"authorization": "********", "X-Api-Key": "new-key", "X-Probe": "********"}
    response = client.patch(url, json={"options": {"headers": headers}}, headers=auth_headers)
    assert response.status_code == 200, response.get_json()
    # Matched in any case; a header the API never masks is taken as sent.
    assert stored(app, response.get_json()["id"])[1]["headers"] == {
        "authorization": "Bearer auth-s3cret", "X-Api-Key": "new-key", "X-Probe": "********"}


def test_it_refuses_a_mask_with_no_stored_secret_behind_it(app, client, auth_headers):
    url = client.post("/api/v1/endpoints", json=HTTP_ENDPOINT, headers=auth_headers).headers["Location"]
    response = client.patch(url, json={"options": {"headers": {"Authorization": "********"}}},
                            headers=auth_headers)
    assert response.status_code == 400
    assert "no stored value" in response.get_json()["fields"]["options.headers.Authorization"]
    created = client.post("/api/v1/endpoints", headers=auth_headers, json={
        **SECRET_KAFKA, "options": {**SECRET_KAFKA["options"], "sasl_password": "********"}})
    assert created.status_code == 400 and "options.sasl_password" in created.get_json()["fields"]
    assert count_endpoints(app) == 1
    assert stored(app, int(url.rsplit("/", 1)[1]))[1] == HTTP_ENDPOINT["options"]


@pytest.mark.parametrize("body", [
    "[" * 5000 + "]" * 5000,
    '{"a":' * 900 + "1" + "}" * 900,
    '{"name": NaN}',
    '{"name": Infinity}',
    '{"name": "bad\\u0000name", "checkType": "tcp", "target": "127.0.0.1", "port": 1}',
])
def test_it_refuses_hostile_bodies_with_a_400(app, client, auth_headers, body):
    response = client.post("/api/v1/endpoints", data=body, content_type="application/json", headers=auth_headers)
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.get_json()["error"] == "invalid_json"
    assert count_endpoints(app) == 0


def test_it_answers_out_of_range_numbers_with_a_400(app, client, auth_headers):
    assert client.get("/api/v1/endpoints/99999999999999999999999", headers=auth_headers).status_code in {400, 404}
    response = client.post("/api/v1/endpoints", json={**HTTP_ENDPOINT, "notificationServiceIds": [10**30]},
                           headers=auth_headers)
    assert response.status_code == 400
    response = client.get("/api/v1/endpoints/1/results?since=9999-12-31T23:59:59-23:59", headers=auth_headers)
    assert response.status_code in {400, 404}
    assert count_endpoints(app) == 0
