"""The OpenAPI descriptions: every route described, served, valid OpenAPI
3.1, and built from the models that validate requests."""
from __future__ import annotations

import re

import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from app.blueprints.api.openapi import DESCRIPTION as API
from app.blueprints.sync_api.openapi import DESCRIPTION as SYNC
from app.services.endpoints import EndpointInput
from app.services.openapi import REF_TEMPLATE
from app.services.sync.schemas import HeartbeatPayload


@pytest.fixture
def sync_app(primary_app):
    return primary_app


def _refs(node) -> set[str]:
    """Every ``$ref`` in a document."""
    found = set()
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            found.add(node["$ref"])
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _operations(document: dict) -> dict[str, dict]:
    return {f"{method.upper()} {path}": operation for path, methods in document["paths"].items()
            for method, operation in methods.items()}


def _flask_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


def test_it_describes_every_route_of_the_json_api(app):
    assert API.undescribed(app) == []
    document = app.test_client().get("/api/v1/openapi.json").get_json()
    served = set(_operations(document))
    routes = {f"{method} {_flask_path(rule.rule)}" for rule, method in API.routes(app)}
    assert served == routes
    assert "PATCH /api/v1/endpoints/{endpoint_id}" in served and "GET /api/v1/instances" in served


def test_it_describes_every_route_of_the_sync_api(sync_app):
    assert SYNC.undescribed(sync_app) == []
    document = sync_app.test_client().get("/sync/api/openapi.json").get_json()
    served = set(_operations(document))
    routes = {f"{method} {_flask_path(rule.rule)}" for rule, method in SYNC.routes(sync_app)}
    assert served == routes
    assert "PUT /sync/api/heartbeat" in served and "POST /sync/api/demote/{instance_id}" in served


def test_a_route_added_without_a_description_is_named(app):
    app.add_url_rule("/api/v1/widgets/<int:widget_id>", endpoint="api.widget", view_func=lambda widget_id: "",
                     methods=["GET", "DELETE"])
    assert API.undescribed(app) == ["DELETE /api/v1/widgets/<int:widget_id>", "GET /api/v1/widgets/<int:widget_id>"]
    document = API.document(app, "test")
    assert "/api/v1/widgets/{widget_id}" not in document["paths"]


@pytest.mark.parametrize("which", ["api", "sync"])
def test_the_descriptions_are_valid_openapi_3_1(which, app, sync_app):
    client, path = ((app.test_client(), "/api/v1/openapi.json") if which == "api"
                    else (sync_app.test_client(), "/sync/api/openapi.json"))
    reply = client.get(path)  # no credentials: the description is open
    assert reply.status_code == 200 and reply.mimetype == "application/json"
    document = reply.get_json()
    assert document["openapi"].startswith("3.1")
    errors = [error.message for error in OPENAPI_31_VALIDATOR.iter_errors(document)]
    assert errors == []
    defined = {REF_TEMPLATE.format(model=name) for name in document["components"]["schemas"]}
    assert _refs(document) <= defined


def test_a_broken_description_is_not_valid():
    """The validator above can fail: a path without responses is refused."""
    broken = {"openapi": "3.1.0", "info": {"title": "x", "version": "1"},
              "paths": {"/x": {"get": {"responses": "none"}}}}
    assert list(OPENAPI_31_VALIDATOR.iter_errors(broken))


def test_request_bodies_are_the_validating_models(app, sync_app):
    api = app.test_client().get("/api/v1/openapi.json").get_json()
    sync = sync_app.test_client().get("/sync/api/openapi.json").get_json()
    expected = EndpointInput.model_json_schema(by_alias=True, ref_template=REF_TEMPLATE)
    assert api["components"]["schemas"]["EndpointInput"] == expected
    assert expected["properties"]["checkType"]["enum"][:1] == ["http"]
    post = api["paths"]["/api/v1/endpoints"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": REF_TEMPLATE.format(
        model="EndpointInput")}
    patch = api["components"]["schemas"]["EndpointInputPatch"]
    assert "required" not in patch and patch["properties"] == expected["properties"]
    heartbeat = sync["paths"]["/sync/api/heartbeat"]["put"]["requestBody"]["content"]["application/json"]
    assert heartbeat["schema"] == {"$ref": REF_TEMPLATE.format(model="HeartbeatPayload")}
    assert sync["components"]["schemas"]["MonitoringResult"]["properties"]["status"]["enum"] == ["UP", "DOWN"]
    assert set(sync["components"]["schemas"]["HeartbeatPayload"]["properties"]) == {
        field.alias for field in HeartbeatPayload.model_fields.values()}


def test_filters_and_errors_are_described(app):
    document = app.test_client().get("/api/v1/openapi.json").get_json()
    listing = document["paths"]["/api/v1/endpoints"]["get"]
    status = next(p for p in listing["parameters"] if p["name"] == "status")
    assert status["in"] == "query" and re.fullmatch(status["schema"]["pattern"], "down")
    assert not re.fullmatch(status["schema"]["pattern"], "sideways")
    results = document["paths"]["/api/v1/endpoints/{endpoint_id}/results"]["get"]
    limit = next(p for p in results["parameters"] if p["name"] == "limit")
    assert limit["schema"]["minimum"] == 1 and limit["schema"]["maximum"] == 1000
    create = document["paths"]["/api/v1/endpoints"]["post"]["responses"]
    assert {"201", "400", "401", "403", "409", "413", "415"} <= set(create)
    error = document["components"]["schemas"]["ErrorAnswer"]
    assert set(error["required"]) == {"error", "message"} and "fields" in error["properties"]
    assert document["security"] == [{"basicAuth": []}, {"apiKey": []}]
    assert document["paths"]["/api/v1/openapi.json"]["get"]["security"] == []


def test_each_sync_route_names_how_it_authenticates(sync_app):
    document = sync_app.test_client().get("/sync/api/openapi.json").get_json()
    operations = _operations(document)
    assert operations["POST /sync/api/register"]["security"] == [{"joinSecret": []}]
    assert operations["POST /sync/api/vote"]["security"] == [{"joinSecret": []}]
    assert operations["PUT /sync/api/heartbeat"]["security"] == [{"instanceToken": []}]
    assert operations["POST /sync/api/promote"]["security"] == [{"adminBasic": []}, {"adminKey": []}]
    assert operations["GET /sync/api/health"]["security"] == []
    assert document["components"]["securitySchemes"]["joinSecret"] == {
        "type": "apiKey", "in": "header", "name": "X-Cluster-Secret",
        "description": "The cluster's SYNC_SHARED_SECRET"}
    assert set(operations["GET /sync/api/readyz"]["responses"]) == {"200", "503"}
    assert operations["GET /sync/api/endpoints"]["responses"]["304"]["headers"]["ETag"]["required"] is True
    assert "X-Cluster-Epoch" in operations["GET /sync/api/status"]["responses"]["200"]["headers"]
    assert "headers" not in operations["GET /sync/api/healthz"]["responses"]["200"]
    assert "429" in operations["POST /sync/api/register"]["responses"]


def test_undescribed_credentials_are_still_refused(app):
    """Opening the description opened nothing else."""
    client = app.test_client()
    assert client.get("/api/v1/endpoints").status_code == 401
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_maintenance_windows_are_described_from_their_models(app, sync_app):
    from app.services.maintenance import MaintenanceWindowInput

    api = app.test_client().get("/api/v1/openapi.json").get_json()
    operations = _operations(api)
    base = "/api/v1/maintenance-windows"
    assert {"GET " + base, "POST " + base, f"GET {base}/{{window_id}}", f"PUT {base}/{{window_id}}",
            f"PATCH {base}/{{window_id}}", f"DELETE {base}/{{window_id}}"} <= set(operations)
    schemas = api["components"]["schemas"]
    expected = MaintenanceWindowInput.model_json_schema(by_alias=True, ref_template=REF_TEMPLATE)
    assert schemas["MaintenanceWindowInput"] == expected and expected["required"] == ["title"]
    assert "required" not in schemas["MaintenanceWindowInputPatch"]
    patch = operations[f"PATCH {base}/{{window_id}}"]
    assert patch["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": REF_TEMPLATE.format(model="MaintenanceWindowInputPatch")}
    assert {"200", "400", "401", "403", "404", "409", "415"} <= set(patch["responses"])
    created = operations["POST " + base]["responses"]["201"]
    assert created["content"]["application/json"]["schema"] == {
        "$ref": REF_TEMPLATE.format(model="MaintenanceWindowAnswer")}
    assert schemas["MaintenanceWindowAnswer"]["properties"]["kind"]["enum"] == ["oneOff", "recurring"]
    # The fields maintenance adds to other answers are declared there too.
    assert "maintenanceWindowId" in schemas["EndpointAnswer"]["properties"]
    assert "inMaintenance" in schemas["ResultAnswer"]["required"]
    sync = sync_app.test_client().get("/sync/api/openapi.json").get_json()
    window = sync["components"]["schemas"]["SyncConfiguration"]["properties"]["maintenanceWindows"]
    assert {"$ref": REF_TEMPLATE.format(model="ReplicatedMaintenanceWindow")} in [
        option.get("items") for option in window["anyOf"]]
