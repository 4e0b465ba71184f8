"""Endpoint pages: a form per check type, every validation error next to its
field, pause/resume/delete, check now, and a dependent's refusal."""
import base64
import html as html_module
import re

import pytest

from app.extensions import db
from app.models import Endpoint, ResponseTime
from tests.ui.conftest import make_endpoint, post

HTTP = {"name": "Homepage", "checkType": "http", "target": "http://127.0.0.1:9/",
        "intervalSeconds": "60", "timeoutSeconds": "10", "failureThreshold": "1", "successThreshold": "1",
        "opt_expected_status_codes": "200-299", "opt_follow_redirects": "on", "opt_verify_tls": "on"}


def _error_for(html: str, field: str) -> str | None:
    """The message shown next to ``field``, if the field is marked invalid."""
    match = re.search(rf'name="{re.escape(field)}"[^>]*aria-invalid="true".*?<p class="error"[^>]*>([^<]+)</p>',
                      html, re.S)
    return html_module.unescape(match.group(1).strip()) if match else None


def test_it_shows_only_the_chosen_types_fields(web):
    http = web.get("/endpoints/new").get_data(as_text=True)
    assert 'name="opt_keyword"' in http and 'name="opt_topic"' not in http and 'name="port"' not in http
    tcp = web.get("/endpoints/new?checkType=tcp").get_data(as_text=True)
    assert 'name="port"' in tcp and 'name="opt_keyword"' not in tcp
    kafka = web.get("/endpoints/form-options?checkType=kafka_consumer",
                    headers={"HX-Request": "true"}).get_data(as_text=True)
    assert kafka.startswith('<fieldset id="type-options">')
    assert 'name="opt_topic"' in kafka and 'name="opt_partitions"' in kafka
    assert 'name="opt_sasl_password"' in kafka and 'type="password"' in kafka
    assert 'name="opt_keyword"' not in kafka and "<html" not in kafka


def test_it_creates_an_http_endpoint_from_the_form(web, app):
    response = post(web, "/endpoints/new", {**HTTP, "opt_keyword": "Welcome", "opt_headers": "X-Probe: 1",
                                            "group": "Public"})
    assert response.status_code == 302
    assert re.fullmatch(r"/endpoints/\d+", response.headers["Location"])
    with app.app_context():
        endpoint = db.session.execute(db.select(Endpoint)).scalar_one()
        assert endpoint.options["keyword"] == "Welcome"
        assert endpoint.options["headers"] == {"X-Probe": "1"}
        assert endpoint.group_name == "Public" and endpoint.interval_seconds == 60


@pytest.mark.parametrize("changes, field, message", [
    ({"name": ""}, "name", "Name is required"),
    ({"name": "n" * 201}, "name", "Name must be at most 200 characters (it has 201)"),
    ({"target": "ftp://example.org"}, "target", "Target must be a URL starting with http:// or https://"),
    ({"target": "http://"}, "target", "Target has no host name"),
    ({"intervalSeconds": "2"}, "intervalSeconds", "Interval must be between 5 and 86400 seconds"),
    ({"intervalSeconds": "often"}, "intervalSeconds", "Interval must be a whole number"),
    ({"timeoutSeconds": "60"}, "timeoutSeconds", "Timeout must be shorter than the interval (60 s)"),
    ({"failureThreshold": "0"}, "failureThreshold", "Failures before down must be between 1 and 100"),
    ({"successThreshold": "101"}, "successThreshold", "Successes before up must be between 1 and 100"),
    ({"group": "g" * 101}, "group", "Group must be at most 100 characters (it has 101)"),
    ({"opt_max_redirects": "50"}, "opt_max_redirects", "Max redirects must be between 0 and 20"),
    ({"opt_expected_status_codes": "abc"}, "opt_expected_status_codes", "'abc' is not a status code"),
    ({"opt_headers": "no colon here"}, "opt_headers", "Each line must be 'Name: value'"),
    ({"opt_headers": "Bad Name: x"}, "opt_headers", "'Bad Name' is not a valid header name"),
    ({"opt_max_body_bytes": "0"}, "opt_max_body_bytes",
     "Max body bytes must be between 1 and 100000000 bytes"),
])
def test_it_shows_each_http_validation_error_next_to_its_field(web, app, changes, field, message):
    response = post(web, "/endpoints/new", {**HTTP, **changes})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    shown = _error_for(html, field)
    assert shown is not None and message in shown, (field, shown)
    assert "Please correct the fields marked below." in html
    with app.app_context():
        assert db.session.execute(db.select(Endpoint)).first() is None  # nothing half-written


def test_it_shows_an_error_about_several_options_above_them(web):
    response = post(web, "/endpoints/new", {**HTTP, "opt_keyword_absent": "on"})
    assert response.status_code == 422
    assert re.search(r'<legend>HTTP\(S\) settings</legend>\s*<p class="error">[^<]*keyword_absent needs a keyword',
                     response.get_data(as_text=True))


@pytest.mark.parametrize("data, field, message", [
    ({"checkType": "tcp", "target": "127.0.0.1"}, "port", "Port is required for TCP port checks"),
    ({"checkType": "tcp", "target": "127.0.0.1", "port": "70000"}, "port", "Port must be between 1 and 65535"),
    ({"checkType": "tcp", "target": "http://x", "port": "80"}, "target", "Target must be a host name or IP address"),
    ({"checkType": "ping", "target": "127.0.0.1", "opt_count": "0"}, "opt_count", "Count must be between 1 and 10"),
    ({"checkType": "kafka_producer", "target": "127.0.0.1:9092"}, "opt_topic", "Topic is required"),
    ({"checkType": "kafka_producer", "target": "localhost", "opt_topic": "t"}, "target",
     "Target must be bootstrap servers as host:port"),
    ({"checkType": "kafka_consumer", "target": "127.0.0.1:9092", "opt_topic": "t", "opt_partitions": "a"},
     "opt_partitions", "Partitions must be a whole number"),
])
def test_it_shows_validation_errors_of_other_check_types(web, data, field, message):
    form = {"name": "x", "intervalSeconds": "60", "timeoutSeconds": "5", **data}
    response = post(web, "/endpoints/new", form)
    assert response.status_code == 422
    shown = _error_for(response.get_data(as_text=True), field)
    assert shown is not None and message in shown, (field, shown)


def test_it_keeps_kafka_sasl_consistency_errors_visible(web):
    response = post(web, "/endpoints/new", {"name": "k", "checkType": "kafka_consumer", "target": "127.0.0.1:9092",
                                            "opt_topic": "t", "opt_security_protocol": "SASL_SSL",
                                            "intervalSeconds": "60", "timeoutSeconds": "5"})
    assert response.status_code == 422
    assert "sasl_mechanism is required with security_protocol SASL_SSL" in response.get_data(as_text=True)


def test_it_edits_an_endpoint_and_keeps_a_secret_left_blank(web, app):
    endpoint_id = make_endpoint(app, checkType="kafka_consumer", target="127.0.0.1:9092", options={
        "topic": "orders", "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
        "sasl_username": "u", "sasl_password": "s3cret"})
    page = web.get(f"/endpoints/{endpoint_id}/edit").get_data(as_text=True)
    assert "s3cret" not in page and 'value="orders"' in page
    form = {"name": "Orders", "checkType": "kafka_consumer", "target": "127.0.0.1:9092", "intervalSeconds": "30",
            "timeoutSeconds": "5", "opt_topic": "orders", "opt_security_protocol": "SASL_PLAINTEXT",
            "opt_sasl_mechanism": "PLAIN", "opt_sasl_username": "u", "opt_sasl_password": ""}
    response = post(web, f"/endpoints/{endpoint_id}/edit", form)
    assert response.status_code == 302, response.get_data(as_text=True)
    with app.app_context():
        endpoint = db.session.get(Endpoint, endpoint_id)
        assert endpoint.name == "Orders" and endpoint.interval_seconds == 30
        assert endpoint.options["sasl_password"] == "s3cret"


def test_the_edit_form_takes_the_target_as_typed(web, app):
    # The form shows the real URL, so one typed without credentials drops
    # them (unlike the API, whose answers never show them).
    endpoint_id = make_endpoint(app, target="http://bob:pa55word@127.0.0.1:9/")
    response = post(web, f"/endpoints/{endpoint_id}/edit", {**HTTP, "target": "http://127.0.0.1:9/"})
    assert response.status_code == 302, response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Endpoint, endpoint_id).target == "http://127.0.0.1:9/"


def test_it_changes_the_check_type_of_an_endpoint(web, app):
    endpoint_id = make_endpoint(app, checkType="tcp", target="127.0.0.1", port=5432)
    response = post(web, f"/endpoints/{endpoint_id}/edit", {**HTTP, "name": "Now HTTP"})
    assert response.status_code == 302
    with app.app_context():
        endpoint = db.session.get(Endpoint, endpoint_id)
        assert endpoint.check_type == "http" and endpoint.port is None


def test_it_pauses_resumes_and_deletes(web, app):
    endpoint_id = make_endpoint(app)
    assert post(web, f"/endpoints/{endpoint_id}/pause").status_code == 303
    with app.app_context():
        assert db.session.get(Endpoint, endpoint_id).is_paused
    assert "Paused" in web.get("/").get_data(as_text=True)
    assert post(web, f"/endpoints/{endpoint_id}/resume").status_code == 303
    with app.app_context():
        assert not db.session.get(Endpoint, endpoint_id).is_paused
    response = post(web, f"/endpoints/{endpoint_id}/delete")
    assert response.status_code == 303 and response.headers["Location"] == "/"
    with app.app_context():
        assert db.session.get(Endpoint, endpoint_id) is None
    assert web.get(f"/endpoints/{endpoint_id}").status_code == 404


def test_check_now_shows_the_result_inline_and_stores_it(web, app, httpserver):
    httpserver.expect_request("/ok").respond_with_data("fine")
    endpoint_id = make_endpoint(app, target=httpserver.url_for("/ok"))
    response = web.post(f"/endpoints/{endpoint_id}/check", headers={"HX-Request": "true", "X-CSRFToken": web.token})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and html.startswith('<div class="check-result"')
    assert ">Up</span>" in html and "HTTP 200" in html
    with app.app_context():
        assert db.session.execute(db.select(ResponseTime)).scalar_one().is_ok
        assert db.session.get(Endpoint, endpoint_id).status == "UP"


def test_check_now_reports_a_failure_with_its_reason(web, app):
    endpoint_id = make_endpoint(app, checkType="tcp", target="127.0.0.1", port=9)
    html = web.post(f"/endpoints/{endpoint_id}/check",
                    headers={"HX-Request": "true", "X-CSRFToken": web.token}).get_data(as_text=True)
    assert ">Down</span>" in html and "127.0.0.1:9" in html


def test_check_now_is_limited_per_user(web, app, httpserver):
    from app.blueprints.admin.endpoints import CHECKS_NOW_PER_MINUTE
    from tests.ui.test_viewers import viewer_client

    httpserver.expect_request("/ok").respond_with_data("fine")
    endpoint_id = make_endpoint(app, target=httpserver.url_for("/ok"))
    viewer = viewer_client(app)
    hx = {"HX-Request": "true", "X-CSRFToken": viewer.token}
    for _ in range(CHECKS_NOW_PER_MINUTE):
        assert viewer.post(f"/endpoints/{endpoint_id}/check", headers=hx).status_code == 200
    refused = viewer.post(f"/endpoints/{endpoint_id}/check", headers=hx)
    html = refused.get_data(as_text=True)
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
    assert html.startswith('<p class="flash error"') and "try again in" in html
    page = post(viewer, f"/endpoints/{endpoint_id}/check")  # without HTMX: a whole page
    assert page.status_code == 429 and "Too many checks" in page.get_data(as_text=True)
    assert len(httpserver.log) == CHECKS_NOW_PER_MINUTE  # the refused ones sent nothing
    # Another user is not held back by this one.
    assert web.post(f"/endpoints/{endpoint_id}/check",
                    headers={"HX-Request": "true", "X-CSRFToken": web.token}).status_code == 200
    # A minute later the viewer may check again.
    limit = app.extensions["monitor_check_now_limit"]
    later = limit.clock() + 61
    limit.clock = lambda: later
    assert viewer.post(f"/endpoints/{endpoint_id}/check", headers=hx).status_code == 200


def test_a_dependent_shows_results_but_refuses_configuration_changes(web, app):
    from app.services import configuration

    endpoint_id = make_endpoint(app)
    with app.app_context():
        configuration.set_role("dependent", new_epoch=1, new_primary_url="http://primary.test:3002")
        db.session.commit()
    page = web.get("/").get_data(as_text=True)
    assert "this instance is a dependent" in page and "http://primary.test:3002" in page
    assert "Add endpoint" not in page
    assert web.get(f"/endpoints/{endpoint_id}").status_code == 200
    for path in ("/endpoints/new", f"/endpoints/{endpoint_id}/edit", f"/endpoints/{endpoint_id}/pause",
                 f"/endpoints/{endpoint_id}/delete", "/status-pages"):
        response = post(web, path, HTTP)
        assert response.status_code == 409, path
        assert "managed by the primary at http://primary.test:3002" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Endpoint, endpoint_id).is_paused is False


def test_it_saves_nothing_when_a_chosen_service_was_deleted_meanwhile(web, app):
    response = post(web, "/endpoints/new", {**HTTP, "notificationServices": "424242"})
    assert response.status_code == 422
    assert "424242" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(Endpoint).count() == 0


def test_it_sets_the_consensus_rule_partial_alerts_and_certificate_days(web, app):
    response = post(web, "/endpoints/new", {**HTTP, "consensusRule": "atLeast:2", "certExpiryDays": "30",
                                            "alertOnPartial": "on"})
    assert response.status_code == 302
    with app.app_context():
        endpoint = db.session.execute(db.select(Endpoint)).scalar_one()
        assert (endpoint.consensus_rule, endpoint.consensus_min_down, endpoint.cert_expiry_days,
                endpoint.alert_on_partial) == ("atLeast", 2, 30, True)
        endpoint_id = endpoint.id
    form = web.get(f"/endpoints/{endpoint_id}/edit").get_data(as_text=True)
    assert 'value="atLeast:2"' in form and 'name="alertOnPartial" checked' in form


def test_it_names_a_bad_consensus_rule_next_to_its_field(web, app):
    response = post(web, "/endpoints/new", {**HTTP, "consensusRule": "most of them"})
    assert response.status_code == 422
    assert "majority" in _error_for(response.get_data(as_text=True), "consensusRule")
    with app.app_context():
        assert db.session.execute(db.select(Endpoint)).first() is None


def _rendered_form(html: str) -> dict:
    """What the form posts if nothing is touched: each input's value as rendered."""
    form = {}
    for tag in re.findall(r"<input[^>]*>", html, re.S):
        name = re.search(r'name="([^"]+)"', tag)
        if not name or name.group(1) == "csrf_token":
            continue
        if 'type="checkbox"' in tag:
            if " checked" in tag:
                form[name.group(1)] = "on"
            continue
        value = re.search(r'value="([^"]*)"', tag)
        form[name.group(1)] = html_module.unescape(value.group(1)) if value else ""
    for name, body in re.findall(r'<select name="([^"]+)"[^>]*>(.*?)</select>', html, re.S):
        chosen = re.search(r"<option(?: value=\"([^\"]*)\")? selected>([^<]*)<", body)
        first = re.search(r"<option(?: value=\"([^\"]*)\")?>([^<]*)<", body)
        option = chosen or first
        form[name] = option.group(1) if option.group(1) is not None else option.group(2)
    for name, body in re.findall(r'<textarea name="([^"]+)"[^>]*>(.*?)</textarea>', html, re.S):
        form[name] = html_module.unescape(body)
    return form


@pytest.mark.parametrize("check_type", ["kafka_producer", "kafka_consumer"])
def test_a_kafka_form_saved_untouched_names_the_missing_topic(web, app, check_type):
    page = web.get(f"/endpoints/new?checkType={check_type}").get_data(as_text=True)
    assert "PydanticUndefined" not in page
    options = web.get(f"/endpoints/form-options?checkType={check_type}",
                      headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "PydanticUndefined" not in options
    form = _rendered_form(page)
    assert form["opt_topic"] == "" and form["checkType"] == check_type
    # Only what a form cannot guess is filled in: a name and the brokers.
    response = post(web, "/endpoints/new", {**form, "name": "Orders", "target": "127.0.0.1:9092"})
    assert response.status_code == 422
    assert _error_for(response.get_data(as_text=True), "opt_topic") == "Topic is required"
    with app.app_context():
        assert db.session.execute(db.select(Endpoint)).first() is None


def test_the_form_and_the_api_refuse_a_long_name_in_the_same_words(web, app):
    from tests.ui.conftest import EMAIL, PASSWORD

    client = app.test_client()
    auth_headers = {"Authorization": "Basic " + base64.b64encode(f"{EMAIL}:{PASSWORD}".encode()).decode()}
    name = "n" * 10_000
    response = post(web, "/endpoints/new", {**HTTP, "name": name})
    assert response.status_code == 422
    shown = _error_for(response.get_data(as_text=True), "name")
    answer = client.post("/api/v1/endpoints", headers=auth_headers, json={
        "name": name, "checkType": "http", "target": "http://127.0.0.1:9/"}).get_json()
    assert answer["fields"] == {"name": "must be at most 200 characters (it has 10000)"}
    assert shown == "Name " + answer["fields"]["name"]
    with app.app_context():
        assert db.session.execute(db.select(Endpoint)).first() is None


def test_the_name_input_does_not_cut_a_long_name_short(web):
    # A browser silently cuts a value to an input's maxlength: the server
    # must see the whole name to say what is wrong with it.
    page = web.get("/endpoints/new").get_data(as_text=True)
    name_input = re.search(r'<input name="name"[^>]*>', page).group(0)
    assert "maxlength" not in name_input
    assert "At most 200 characters" in page


def test_a_new_endpoints_timeout_follows_a_short_interval(web, app):
    form = _rendered_form(web.get("/endpoints/new").get_data(as_text=True))
    assert form["timeoutSeconds"] == ""
    response = post(web, "/endpoints/new", {**form, "name": "Fast", "target": "http://127.0.0.1:9/",
                                            "intervalSeconds": "10"})
    assert response.status_code == 302, _error_for(response.get_data(as_text=True), "timeoutSeconds")
    with app.app_context():
        endpoint = db.session.execute(db.select(Endpoint)).scalar_one()
        assert (endpoint.interval_seconds, endpoint.timeout_seconds) == (10, 5)


def test_the_form_reads_numbers_from_its_text_inputs(web, app):
    response = post(web, "/endpoints/new", {**HTTP, "intervalSeconds": " 30 ", "timeoutSeconds": "2.5",
                                            "opt_max_redirects": "3"})
    assert response.status_code == 302
    with app.app_context():
        endpoint = db.session.execute(db.select(Endpoint)).scalar_one()
        assert (endpoint.interval_seconds, endpoint.timeout_seconds, endpoint.options["max_redirects"]) == (30, 2.5, 3)


def test_the_form_shows_every_bad_field_at_once(web):
    response = post(web, "/endpoints/new", {**HTTP, "name": "", "target": "ftp://x", "intervalSeconds": "2",
                                            "opt_max_redirects": "50"})
    html = response.get_data(as_text=True)
    assert _error_for(html, "name") == "Name is required"
    assert _error_for(html, "target") == "Target must be a URL starting with http:// or https://"
    assert _error_for(html, "intervalSeconds") == "Interval must be between 5 and 86400 seconds"
    assert _error_for(html, "opt_max_redirects") == "Max redirects must be between 0 and 20"
