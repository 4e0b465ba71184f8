"""Schemathesis against both OpenAPI descriptions, in-process.

Every operation of the JSON API and of the sync API is called with data
generated from its description (examples, coverage of each keyword, and
fuzzing), with valid credentials, on an app of its own: no answer may be a
server error, and every answer must match the description (status code,
content type, headers, body schema), and invalid input must be refused.

The descriptions are read from the served documents of an app made at
collection time; each operation then runs against a fresh app from the
fixtures, seeded with an administrator and her API key, endpoints, a
notification service on loopback and (for the sync API) a registered
instance. Generated peer URLs never leave the machine: every generated
``syncUrl`` or ``primaryUrl`` that the app could contact (a vote's, an
announcement's, a registration's) is pointed at a real HTTP server on
loopback (``peer``), which records what it is asked.
"""
from __future__ import annotations

import os
import tempfile
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import CoverageScenario
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from werkzeug.serving import make_server

from app.extensions import db
from tests.conftest import SECRET, make_app

# Examples per operation in the fuzzing phase; the coverage phase adds its
# own cases, one or a few per schema keyword. By hand, a longer run with
# fresh data each time: SCHEMATHESIS_MAX_EXAMPLES=500 SCHEMATHESIS_RANDOM=1.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))
RANDOM = os.environ.get("SCHEMATHESIS_RANDOM") == "1"
DEPENDENT_ID = "0d5b1f4e-9a7c-4f55-8e0b-3b2f7b6c9a10"
ADMIN_EMAIL = "admin@example.org"


# Removed when the interpreter exits.
_DESCRIBING = tempfile.TemporaryDirectory(prefix="openapi-")


def _served_description(serve: str, path: str) -> schemathesis.BaseSchema:
    env = {"ENABLE_SYNC_API": "true", "SYNC_SHARED_SECRET": SECRET} if serve == "sync" else {}
    # This app serves the description only: each test passes its own app.
    application = make_app(Path(_DESCRIBING.name) / serve, env, serve=serve)
    return schemathesis.openapi.from_wsgi(path, application)


api_schema = _served_description("web", "/api/v1/openapi.json")
sync_schema = _served_description("sync", "/sync/api/openapi.json")

# Not checked: that every schema-valid request is accepted. What depends on
# two fields or on stored data (a target of the check type's form, a timeout
# shorter than the interval, a kind's settings, ids that exist) is refused
# with a 400 that names the field, as it should be, and JSON Schema's
# "integer" takes 60.0, which the API's strict types refuse.
EXCLUDED = [positive_data_acceptance]
# /readyz answers 503 by design while Redis, the clock or a worker is away
# (none runs here); its body is still checked against the description.
PROBE_EXCLUDED = [*EXCLUDED, not_a_server_error]
RUN = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
               suppress_health_check=list(HealthCheck))


# Status codes answered, per operation, across the module's tests.
ANSWERED: dict[str, Counter] = {}


@pytest.fixture(scope="module", autouse=True)
def answered_summary(request):
    """After the run, one line per API: operations, cases sent, and the
    status codes answered (so a run that reached only 401s shows it)."""
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        for prefix in ("/api/v1", "/sync/api"):
            counts = {label: c for label, c in ANSWERED.items() if label.split(" ", 1)[1].startswith(prefix)}
            total = sum((c for c in counts.values()), Counter())
            if counts:
                codes = ", ".join(f"{code}: {n}" for code, n in sorted(total.items()))
                reporter.write_line(f"\nschemathesis {prefix}: {len(counts)} operations, "
                                    f"{sum(total.values())} cases ({codes})")
                if request.config.getoption("verbose") > 0:
                    for label, answered in sorted(counts.items()):
                        reporter.write_line(f"  {label}: " + ", ".join(f"{code}: {n}" for code, n in
                                                                        sorted(answered.items())))


def _aim_at_seeded(case, path_ids: dict, body_fields: dict | None = None) -> None:
    """Point a valid case at the seeded data: a generated id rarely names a
    row, and every such case would end in 404 (invalid cases keep theirs)."""
    if case._meta is None or case._meta.generation.mode != GenerationMode.POSITIVE:
        return
    for name, value in path_ids.items():
        if name in (case.path_parameters or {}):
            case.path_parameters[name] = value
    if body_fields and isinstance(case.body, dict):
        case.body.update({name: value for name, value in body_fields.items() if name in case.body})


def _call(case, application, headers: dict) -> None:
    _aim_at_peer(case)
    response = case.call_and_validate(app=application, excluded_checks=_excluded(case), headers=headers)
    ANSWERED.setdefault(case.operation.label, Counter())[response.status_code] += 1


PEER_URL_FIELDS = ("syncUrl", "primaryUrl")
PEER = {}


def _aim_at_peer(case) -> None:
    """A generated URL the app would call (valid by the description: http(s)
    and at most 2,048 characters) goes to the loopback peer instead; other
    values stay as generated, so invalid cases stay invalid."""
    if not isinstance(case.body, dict):
        return
    for name in PEER_URL_FIELDS:
        value = case.body.get(name)
        if isinstance(value, str) and value.startswith(("http://", "https://")) and len(value) <= 2048:
            case.body[name] = PEER["url"]


@pytest.fixture(scope="module", autouse=True)
def peer():
    """A real HTTP server on loopback standing in for every other instance:
    it answers each call 503 (a member that is starting) and keeps the
    requests it got."""
    requests_seen = []

    def application(environ, start_response):
        requests_seen.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        start_response("503 Service Unavailable", [("Content-Type", "application/json")])
        return [b'{"error": "unavailable", "message": "starting"}']

    server = make_server("127.0.0.1", 0, application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    PEER["url"] = f"http://127.0.0.1:{server.server_port}"
    yield requests_seen
    server.shutdown()
    thread.join(timeout=10)


def _seed(application) -> str:
    """An administrator with an API key, endpoints (one with a result), a
    notification service (on loopback), maintenance windows of both kinds
    (the one-off in progress, so answers carry a window id and a result in
    maintenance); the API key."""
    from app.checks import CheckResult
    from app.models import utcnow
    from app.services import maintenance
    from app.services.accounts import create_api_key, create_user
    from app.services.endpoints import create_endpoint
    from app.services.notifications import create_service
    from app.services.results import result_row, store_results

    with application.app_context():
        create_user(ADMIN_EMAIL, "correct horse battery", is_admin=True)
        _, key = create_api_key(ADMIN_EMAIL, "schemathesis")
        service = create_service({"name": "hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}})
        web = create_endpoint({"name": "web", "checkType": "http", "target": "http://127.0.0.1:9/",
                               "notificationServiceIds": [service.id]})
        create_endpoint({"name": "port", "checkType": "tcp", "target": "127.0.0.1", "port": 9, "group": "edge"})
        now = utcnow()
        maintenance.create_window({"title": "upgrade", "startsAt": (now - timedelta(hours=1)).isoformat(),
                                   "endsAt": (now + timedelta(days=1)).isoformat(), "endpointIds": [web.id]})
        maintenance.create_window({"title": "backup", "cronExpression": "0 2 * * 0", "timeZone": "Europe/Berlin",
                                   "durationMinutes": 120, "groups": ["edge"]})
        result = CheckResult(is_ok=False, check_type="http", failure_reason="refused",
                             checked_at=now - timedelta(minutes=1))
        store_results([result_row(web.id, result, instance_id="local", location="here")])
        db.session.commit()
        db.session.remove()
    return key


@pytest.fixture
def seeded_api(app):
    """A web app with data, and an administrator's API key."""
    return app, _seed(app)


@pytest.fixture
def seeded_primary(primary_app):
    """A primary's sync app with data, a registered dependent's token and an
    administrator's API key."""
    from app.blueprints.sync_api import views

    views._failures.clear()  # join-secret attempts of earlier tests
    key = _seed(primary_app)
    reply = primary_app.test_client().post(
        "/sync/api/register", headers={"X-Cluster-Secret": SECRET},
        json={"instanceId": DEPENDENT_ID, "instanceName": "dep-1", "location": "lab",
              "syncUrl": "http://127.0.0.1:9", "failoverOrder": 1})
    assert reply.status_code == 201, reply.get_json()
    return primary_app, reply.get_json()["token"], key


def _excluded(case) -> list:
    """The checks that do not apply to this case (see EXCLUDED)."""
    if case.operation.path.endswith("/readyz"):
        return PROBE_EXCLUDED
    data = getattr(case._meta.phase, "data", None) if case._meta is not None else None
    if (getattr(data, "scenario", None) == CoverageScenario.OBJECT_UNEXPECTED_PROPERTIES
            and getattr(data, "parameter_location", None) == ParameterLocation.HEADER):
        # An unknown header is no invalid input: HTTP lets a server ignore it.
        return [*EXCLUDED, negative_data_rejection]
    return EXCLUDED


@api_schema.parametrize()
@RUN
def test_json_api_matches_its_description(case, seeded_api):
    application, key = seeded_api
    # Ten configuration requests a minute per user, which a test of its own covers.
    application.extensions.pop("monitor_config_document_limit", None)
    _aim_at_seeded(case, {"endpoint_id": 1, "service_id": 1, "window_id": 1},
                   {"endpointIds": [1], "groups": ["edge"]} if "/maintenance-windows" in case.path else None)
    _call(case, application, {"Authorization": f"Bearer {key}"})


def _sync_credentials(case, token: str, key: str) -> dict:
    """The headers each sync route's security asks for."""
    security = case.operation.definition.raw.get("security") or []
    schemes = {name for option in security for name in option}
    headers = {}
    if "joinSecret" in schemes:
        headers["X-Cluster-Secret"] = SECRET
    if "instanceToken" in schemes:
        headers["Authorization"] = f"Bearer {token}"
    elif "adminKey" in schemes:
        headers["Authorization"] = f"Bearer {key}"
    return headers


@sync_schema.parametrize()
@RUN
def test_sync_api_matches_its_description(case, seeded_primary):
    from app.blueprints.sync_api import views

    application, token, key = seeded_primary
    # The checks try wrong secrets on purpose: after ten in a minute the
    # address is refused (429), which a test of its own covers.
    views._failures.clear()
    with application.app_context():
        from app.services import configuration

        own_id = configuration.instance_id()
    # A dependent leaves the cluster (DELETE of itself) in some cases: the
    # token is then refused (401) for the rest of the operation's cases.
    _aim_at_seeded(case, {"endpoint_id": 1, "instance_id": DEPENDENT_ID if case.method == "DELETE" else own_id},
                   {"instanceId": DEPENDENT_ID} if case.path.endswith("/heartbeat") else None)
    _call(case, application, _sync_credentials(case, token, key))


# --- what the runs above found, each pinned by a plain test --------------------

@pytest.mark.parametrize("kind", [{"a": 1}, ["webhook"]])
def test_a_kind_that_is_not_text_is_a_400_naming_it(seeded_api, kind):
    application, key = seeded_api
    reply = application.test_client().post("/api/v1/notification-services", headers={"Authorization": f"Bearer {key}"},
                                           json={"name": "x", "kind": kind, "config": {}})
    assert reply.status_code == 400 and "kind" in reply.get_json()["fields"]


def test_a_405_names_the_methods_allowed(app):
    reply = app.test_client().open("/api/v1/endpoints", method="TRACE")
    assert reply.status_code == 405 and reply.get_json()["error"] == "method_not_allowed"
    assert set(reply.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


@pytest.mark.parametrize("epoch", [True, "2", 1.5])
def test_a_peer_payload_takes_json_types_as_they_are(seeded_primary, epoch):
    application, _, _ = seeded_primary
    reply = application.test_client().post("/sync/api/vote", headers={"X-Cluster-Secret": SECRET},
                                           json={"candidateId": DEPENDENT_ID, "epoch": epoch,
                                                 "syncUrl": "http://127.0.0.1:9"})
    assert reply.status_code == 400 and "epoch" in reply.get_json()["fields"]


def test_a_document_service_kind_that_is_not_text_is_a_400_naming_it(seeded_api):
    application, key = seeded_api
    reply = application.test_client().post(
        "/api/v1/config?dryRun=true", headers={"Authorization": f"Bearer {key}", "Content-Type": "application/yaml"},
        data="notificationServices:\n- name: x\n  kind: {}\n  config: {}\n")
    assert reply.status_code == 400
    assert [p["path"] for p in reply.get_json()["problems"]] == ["notificationServices[0].kind"]


@pytest.mark.parametrize("value", ["TRUE", " true", "1"])
def test_a_config_flag_is_exactly_true_or_false(seeded_api, value):
    application, key = seeded_api
    reply = application.test_client().get(f"/api/v1/config?withSecrets={value}",
                                          headers={"Authorization": f"Bearer {key}"})
    assert reply.status_code == 400 and "withSecrets" in reply.get_json()["fields"]


def test_the_described_document_is_what_an_export_writes_and_an_import_takes(seeded_api):
    from app.services.config_documents import ConfigDocument

    application, key = seeded_api
    api, auth = application.test_client(), {"Authorization": f"Bearer {key}"}
    for query in ("", "?withSecrets=true"):
        exported = api.get(f"/api/v1/config{query}", headers=auth).get_json()
        assert ConfigDocument.model_validate(exported).model_dump(by_alias=True, exclude_unset=True) == exported
    example = ConfigDocument.model_json_schema()["examples"][0]
    applied = api.post("/api/v1/config", headers=auth, json=example)
    assert applied.status_code == 200, applied.get_json()
    assert applied.get_json()["sections"]["statusPages"]["added"] == ["edge"]
