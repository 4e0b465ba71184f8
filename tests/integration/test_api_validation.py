"""What the JSON API says about bad input: every bad field at once, in the
product's words, JSON's types taken as they are, never blaming a field the
client did not send, and list filters that refuse what they do not know."""
import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import Endpoint, NotificationService

HTTP_ENDPOINT = {"name": "Homepage", "checkType": "http", "target": "http://127.0.0.1:9/"}


def count(app, model):
    with app.app_context():
        return db.session.execute(select(func.count(model.id))).scalar_one()


def refused(client, auth_headers, body, *, path="/api/v1/endpoints", method="post"):
    """The fields of a 400 answer, after checking its shape."""
    response = getattr(client, method)(path, json=body, headers=auth_headers)
    assert response.status_code == 400, response.get_json()
    answer = response.get_json()
    assert answer["error"] == "validation_error"
    for field, message in answer["fields"].items():
        assert f"{field}: {message}" in answer["message"]
    return answer["fields"]


def test_it_reports_every_bad_field_at_once(app, client, auth_headers):
    fields = refused(client, auth_headers, {
        "name": "n" * 10_000, "checkType": "tcp", "target": "http://db.internal/", "intervalSeconds": 2,
        "options": {"nonsense": 1},
    })
    # The name, the target (for a TCP check), the missing port and the
    # unknown option: the field errors and those of the check type together.
    assert fields == {
        "name": "must be at most 200 characters (it has 10000)",
        "intervalSeconds": "must be between 5 and 86400 seconds",
        "target": "must be a host name or IP address (no scheme or port)",
        "port": "is required for TCP port checks",
        "options.nonsense": "is not a setting of TCP port checks",
    }
    assert count(app, Endpoint) == 0


def test_it_reports_unknown_instances_and_services_with_the_rest(app, client, auth_headers):
    fields = refused(client, auth_headers, {**HTTP_ENDPOINT, "name": "", "locations": ["no-such-instance"],
                                            "notificationServiceIds": [424242]})
    assert fields == {"name": "must not be empty",
                      "locations": "no instance with id no-such-instance is a member of this cluster",
                      "notificationServiceIds": "no notification service with id 424242"}
    assert count(app, Endpoint) == 0


def test_it_reports_bad_options_together_with_bad_fields(app, client, auth_headers):
    fields = refused(client, auth_headers, {"name": "", "checkType": "kafka_consumer", "target": "127.0.0.1:9092",
                                            "options": {"partitions": []}})
    assert fields == {"name": "must not be empty", "options.topic": "is required",
                      "options.partitions": "must have at least 1 item"}


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"intervalSeconds": "60"}, "intervalSeconds", "must be a whole number, not text: send 60 without quotes"),
    ({"intervalSeconds": True}, "intervalSeconds", "must be a whole number, not true or false"),
    ({"intervalSeconds": 60.5}, "intervalSeconds", "must be a whole number between 5 and 86400 seconds"),
    ({"intervalSeconds": 60.0}, "intervalSeconds", "must be a whole number: send 60"),
    ({"intervalSeconds": "often"}, "intervalSeconds", "must be a whole number between 5 and 86400 seconds"),
    ({"timeoutSeconds": "5"}, "timeoutSeconds", "must be a number, not text: send 5 without quotes"),
    ({"timeoutSeconds": False}, "timeoutSeconds", "must be a number, not true or false"),
    ({"isPaused": 1}, "isPaused", "must be true or false, not a number"),
    ({"isPaused": "true"}, "isPaused", "must be true or false"),
    ({"alertOnPartial": 0}, "alertOnPartial", "must be true or false, not a number"),
    ({"failureThreshold": "3"}, "failureThreshold", "must be a whole number, not text: send 3 without quotes"),
    ({"notificationServiceIds": ["1"]}, "notificationServiceIds.0",
     "must be a whole number, not text: send 1 without quotes"),
    ({"options": {"verify_tls": 1}}, "options.verify_tls", "must be true or false, not a number"),
    ({"options": {"max_redirects": "3"}}, "options.max_redirects",
     "must be a whole number, not text: send 3 without quotes"),
    ({"options": {"expected_status_codes": [True]}}, "options.expected_status_codes.0",
     "must be a whole number or text"),
])
def test_it_takes_json_types_as_they_are(app, client, auth_headers, change, field, message):
    fields = refused(client, auth_headers, {**HTTP_ENDPOINT, **change})
    assert fields == {field: message}
    assert count(app, Endpoint) == 0


def test_a_patch_takes_json_types_as_they_are_too(app, client, auth_headers):
    created = client.post("/api/v1/endpoints", json=HTTP_ENDPOINT, headers=auth_headers)
    url = created.headers["Location"]
    fields = refused(client, auth_headers, {"isPaused": 1, "intervalSeconds": "30"}, path=url, method="patch")
    assert set(fields) == {"isPaused", "intervalSeconds"}
    answer = client.get(url, headers=auth_headers).get_json()
    assert (answer["isPaused"], answer["intervalSeconds"]) == (False, 60)


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"name": "n" * 201}, "name", "must be at most 200 characters (it has 201)"),
    ({"name": 7}, "name", "must be text"),
    ({"checkType": "smtp"}, "checkType", "must be one of http, tcp, ping, kafka_producer, kafka_consumer"),
    ({"port": 80}, "port", "is not used by HTTP(S) checks; put it in the target"),
    ({"timeoutSeconds": 0}, "timeoutSeconds", "must be more than 0 and at most 300 seconds"),
    ({"failureThreshold": 0}, "failureThreshold", "must be between 1 and 100"),
    ({"reminderIntervalMinutes": 0}, "reminderIntervalMinutes", "must be between 1 and 10080 minutes"),
    ({"certExpiryDays": 400}, "certExpiryDays", "must be between 1 and 365 days"),
    ({"group": "g" * 101}, "group", "must be at most 100 characters (it has 101)"),
    ({"locations": []}, "locations", "must have at least 1 item"),
    ({"options": "all"}, "options", "must be an object of names and values"),
    ({"colour": "red"}, "colour", "is not a field of an endpoint"),
    ({"options": {"method": "BREW"}}, "options.method",
     "must be one of GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS"),
    ({"options": {"max_body_bytes": 0}}, "options.max_body_bytes", "must be between 1 and 100000000 bytes"),
])
def test_it_speaks_the_products_words(app, client, auth_headers, change, field, message):
    assert refused(client, auth_headers, {**HTTP_ENDPOINT, **change}) == {field: message}


@pytest.mark.parametrize(("check_type", "options", "field", "message"), [
    ("ping", {"count": 11}, "options.count", "must be between 1 and 10"),
    ("ping", {"max_packet_loss_percent": 101}, "options.max_packet_loss_percent", "must be between 0 and 100 %"),
    ("kafka_producer", {"topic": "two words"}, "options.topic",
     "must be 1 to 249 letters, digits, dots, underscores or dashes (Kafka's rule for topic names)"),
    ("kafka_producer", {"topic": "t", "acks": 2}, "options.acks", "must be one of all, 1 or 0"),
    ("kafka_consumer", {"topic": "t", "max_message_age_seconds": 0}, "options.max_message_age_seconds",
     "must be more than 0 seconds"),
])
def test_it_speaks_the_products_words_for_each_check_type(client, auth_headers, check_type, options, field,
                                                          message):
    target = "127.0.0.1" if check_type == "ping" else "127.0.0.1:9092"
    body = {"name": "x", "checkType": check_type, "target": target, "options": options}
    assert refused(client, auth_headers, body) == {field: message}


def test_no_message_is_the_librarys(client, auth_headers):
    fields = refused(client, auth_headers, {
        "name": "", "checkType": "http", "target": "", "port": "x", "intervalSeconds": [], "timeoutSeconds": {},
        "failureThreshold": 0.5, "isPaused": "maybe", "group": 3, "locations": "all", "options": {"headers": []},
        "consensusRule": 1, "unknown": None,
    })
    assert len(fields) >= 12
    for message in fields.values():
        assert not message.startswith(("Input should", "Field required", "String should", "Extra inputs",
                                       "Value error")), message


def test_the_default_timeout_follows_the_interval(client, auth_headers):
    created = client.post("/api/v1/endpoints", json={**HTTP_ENDPOINT, "intervalSeconds": 10}, headers=auth_headers)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["timeoutSeconds"] == 5
    created = client.post("/api/v1/endpoints", json={**HTTP_ENDPOINT, "intervalSeconds": 300}, headers=auth_headers)
    assert created.get_json()["timeoutSeconds"] == 10


def test_it_blames_the_field_that_was_sent(client, auth_headers):
    # The interval is the default (60 s): the timeout sent is the one to change.
    fields = refused(client, auth_headers, {**HTTP_ENDPOINT, "timeoutSeconds": 60})
    assert fields == {"timeoutSeconds": "must be shorter than the interval (60 s): lower the timeout or raise "
                                        "the interval"}
    # A stored timeout of 20 s, and a change of the interval alone: the interval is blamed.
    created = client.post("/api/v1/endpoints", json={**HTTP_ENDPOINT, "timeoutSeconds": 20}, headers=auth_headers)
    url = created.headers["Location"]
    fields = refused(client, auth_headers, {"intervalSeconds": 10}, path=url, method="patch")
    assert fields == {"intervalSeconds": "must be longer than the timeout (20 s): raise the interval or lower "
                                         "the timeout"}
    # Both sent: the timeout.
    fields = refused(client, auth_headers, {"intervalSeconds": 10, "timeoutSeconds": 10}, path=url, method="patch")
    assert set(fields) == {"timeoutSeconds"}


@pytest.mark.parametrize(("query", "field", "message"), [
    ("status=bogus", "status", "must be one of UP, PARTIAL, DOWN, PENDING"),
    ("consensus=bogus", "consensus", "must be one of UP, PARTIAL, DOWN, PENDING"),
])
def test_list_filters_refuse_values_they_do_not_know(client, auth_headers, query, field, message):
    client.post("/api/v1/endpoints", json=HTTP_ENDPOINT, headers=auth_headers)
    response = client.get(f"/api/v1/endpoints?{query}", headers=auth_headers)
    assert response.status_code == 400
    assert response.get_json()["fields"] == {field: message}
    assert response.get_json()["error"] == "validation_error"


def test_list_filters_take_known_values_in_any_case(client, auth_headers):
    client.post("/api/v1/endpoints", json=HTTP_ENDPOINT, headers=auth_headers)
    pending = client.get("/api/v1/endpoints?status=pending", headers=auth_headers).get_json()["endpoints"]
    assert [e["name"] for e in pending] == ["Homepage"]
    assert client.get("/api/v1/endpoints?status=DOWN", headers=auth_headers).get_json()["endpoints"] == []


def test_the_results_filters_are_reported_together(client, auth_headers):
    url = client.post("/api/v1/endpoints", json=HTTP_ENDPOINT, headers=auth_headers).headers["Location"]
    response = client.get(f"{url}/results?limit=lots&since=yesterday", headers=auth_headers)
    assert response.status_code == 400
    assert response.get_json()["fields"] == {
        "limit": "must be a whole number between 1 and 1000",
        "since": "must be an ISO 8601 time with a zone, such as 2026-01-31T12:00:00Z",
    }
    assert client.get(f"{url}/results?limit=0", headers=auth_headers).status_code == 400
    assert client.get(f"{url}/results?limit=1000", headers=auth_headers).status_code == 200


WEBHOOK = {"name": "Hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}}


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"isEnabled": 1}, "isEnabled", "must be true or false, not a number"),
    ({"isDefault": "true"}, "isDefault", "must be true or false"),
    ({"name": ""}, "name", "must not be empty"),
    ({"colour": "red"}, "colour", "is not a field of a notification service"),
    ({"config": {"url": "http://127.0.0.1:9/hook", "timeoutSeconds": "5"}}, "config.timeoutSeconds",
     "must be a number, not text: send 5 without quotes"),
    ({"config": {"url": "http://127.0.0.1:9/hook", "timeoutSeconds": 500}}, "config.timeoutSeconds",
     "must be more than 0 and at most 120 seconds"),
    ({"config": {"url": "http://127.0.0.1:9/hook", "colour": 1}}, "config.colour",
     "is not a setting of this kind of service"),
])
def test_notification_services_speak_the_same_words(app, client, auth_headers, change, field, message):
    fields = refused(client, auth_headers, {**WEBHOOK, **change}, path="/api/v1/notification-services")
    assert fields == {field: message}
    assert count(app, NotificationService) == 0


def test_notification_services_report_every_bad_field_at_once(client, auth_headers):
    fields = refused(client, auth_headers, {"name": "", "kind": "webhook", "isEnabled": 0,
                                            "config": {"url": "ftp://h/", "timeoutSeconds": 0}},
                     path="/api/v1/notification-services")
    assert set(fields) == {"name", "isEnabled", "config.url", "config.timeoutSeconds"}


def test_the_command_line_says_the_same_and_follows_the_interval(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["endpoints", "add", "--name", "n" * 201, "--type", "http",
                                 "--target", "http://127.0.0.1:9/"])
    assert result.exit_code == 2
    assert "name: must be at most 200 characters (it has 201)" in result.output
    # An interval of 10 s with the default timeout is fine: the timeout follows it.
    result = runner.invoke(args=["endpoints", "add", "--name", "fast", "--type", "http",
                                 "--target", "http://127.0.0.1:9/", "--interval", "10"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.execute(select(Endpoint.timeout_seconds)).scalar_one() == 5
