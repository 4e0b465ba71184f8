"""Endpoints and their results over JSON. Views are thin: parse, call a
service, answer."""
from datetime import datetime

from flask import current_app, jsonify, request, url_for
from pydantic import AwareDatetime, BaseModel, Field, ValidationError, field_validator

from app.blueprints.api import bp
from app.blueprints.errors import json_body, json_error
from app.extensions import api_auth
from app.services import endpoints as endpoint_service
from app.services import consensus
from app.services import results as result_service
from app.services import configuration, maintenance
from app.services.input_errors import InvalidInput
from app.services.validation_messages import messages_of, whole_number_error

MAX_RESULTS = 1000
# 10,000 endpoints with every field written out are about 4 MiB of JSON (1.3 MiB
# with the defaults left out); the same room as a configuration document.
MAX_BATCH_BYTES = 16 * 1024 * 1024
# Routes open to all: the description holds no data.
OPEN_ROUTES = frozenset({"api.openapi"})


class ResultsQuery(BaseModel):
    """The query of an endpoint's results (unknown parameters are ignored)."""

    limit: int = Field(default=100, ge=1, le=MAX_RESULTS, description="How many, newest first")
    since: AwareDatetime | None = Field(default=None, description="Only results checked at or after this time")

    @field_validator("limit", mode="before")
    @classmethod
    def _whole_number(cls, value):
        if problem := whole_number_error(str(value), 1, MAX_RESULTS):
            raise ValueError(problem)
        return int(value)

    @field_validator("since", mode="before")
    @classmethod
    def _time_with_zone(cls, value):
        try:
            moment = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise ValueError("must be an ISO 8601 time with a zone, such as 2026-01-31T12:00:00Z")
        return moment


@bp.before_request
def _require_auth():
    """Every API route but the description needs a signed-in user or an API key."""
    if request.endpoint in OPEN_ROUTES:
        return None
    return _authenticated()


@api_auth.login_required
def _authenticated():
    return None


def _payload():
    return json_body()


def _invalid(exc):
    return json_error(400, "validation_error", str(exc), fields=exc.errors)


def _refuse_change():
    """Refuse a configuration change on a dependent, or from a viewer."""
    user = api_auth.current_user()
    if user is not None and not user.is_admin:
        return json_error(403, "forbidden", "this account can read but not change configuration")
    state = configuration.snapshot()
    if not state.accepts_configuration:
        where = f"on the primary at {state.primary_url}" if state.primary_url and state.is_dependent else \
            "on the cluster's primary"
        return json_error(409, "read_only", f"this instance is {state.role}; change configuration {where}")
    return None


def _endpoint_or_404(endpoint_id):
    endpoint = endpoint_service.get_endpoint(endpoint_id)
    if endpoint is None:
        return None, json_error(404, "not_found", f"no endpoint with id {endpoint_id}")
    return endpoint, None


def _answers(endpoints) -> list[dict]:
    """Endpoints as the API answers them, each with its ``consensus``."""
    views = consensus.api_answers(endpoints)
    held = maintenance.endpoints_in_maintenance({e.id: e.group_name for e in endpoints})
    return [{**e.to_dict(), "consensus": views[e.id],
             "maintenanceWindowId": held[e.id].id if e.id in held else None} for e in endpoints]


def _answer(endpoint):
    return jsonify(_answers([endpoint])[0])


@bp.get("/endpoints")
def list_endpoints():
    try:
        found = endpoint_service.list_endpoints(search=request.args.get("search"),
                                                status=request.args.get("status"),
                                                consensus=request.args.get("consensus"))
    except endpoint_service.InvalidEndpoint as exc:
        return _invalid(exc)
    return jsonify({"endpoints": _answers(found)})


@bp.post("/endpoints")
def create_endpoint():
    refused = _refuse_change()
    if refused:
        return refused
    data, error = _payload()
    if error:
        return error
    try:
        endpoint = endpoint_service.create_endpoint(data, from_api=True)
    except endpoint_service.InvalidEndpoint as exc:
        return _invalid(exc)
    response = _answer(endpoint)
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_endpoint", endpoint_id=endpoint.id)
    return response


@bp.post("/endpoints/batch")
def create_endpoints():
    """Create many endpoints at once, all or none (``{"endpoints": [...]}``)."""
    refused = _refuse_change()
    if refused:
        return refused
    request.max_content_length = current_app.config.get("ENDPOINT_BATCH_MAX_BYTES", MAX_BATCH_BYTES)
    data, error = _payload()
    if error:
        return error
    unknown = sorted(set(data) - {"endpoints"})
    if unknown:
        return json_error(400, "validation_error", f"{unknown[0]} is not a field of a batch (it has endpoints alone)",
                          fields={name: "is not a field of a batch (it has endpoints alone)" for name in unknown})
    try:
        ids = endpoint_service.create_endpoints(data.get("endpoints"))
    except endpoint_service.ChangeRefused as exc:
        return json_error(409, "read_only", str(exc))
    except endpoint_service.InvalidEndpoint as exc:
        items = {name.split(".", 1)[0] for name in exc.errors}
        first = next(iter(exc.errors.items()))
        return json_error(400, "validation_error",
                          f"nothing was created: {first[0]} {first[1]}"
                          + (f" ({len(exc.errors)} problems in {len(items)} items)" if len(exc.errors) > 1 else ""),
                          fields=exc.errors)
    return jsonify({"created": len(ids), "endpointIds": ids, "configVersion": configuration.config_version()}), 201


@bp.get("/endpoints/<int:endpoint_id>")
def get_endpoint(endpoint_id):
    endpoint, error = _endpoint_or_404(endpoint_id)
    return error or _answer(endpoint)


@bp.route("/endpoints/<int:endpoint_id>", methods=["PUT", "PATCH"])
def update_endpoint(endpoint_id):
    refused = _refuse_change()
    if refused:
        return refused
    endpoint, error = _endpoint_or_404(endpoint_id)
    if error:
        return error
    data, error = _payload()
    if error:
        return error
    try:
        endpoint_service.update_endpoint(endpoint, data, partial=request.method == "PATCH", from_api=True)
    except endpoint_service.InvalidEndpoint as exc:
        return _invalid(exc)
    return _answer(endpoint)


@bp.delete("/endpoints/<int:endpoint_id>")
def delete_endpoint(endpoint_id):
    refused = _refuse_change()
    if refused:
        return refused
    endpoint, error = _endpoint_or_404(endpoint_id)
    if error:
        return error
    endpoint_service.delete_endpoint(endpoint)
    return "", 204


@bp.get("/endpoints/<int:endpoint_id>/results")
def endpoint_results(endpoint_id):
    endpoint, error = _endpoint_or_404(endpoint_id)
    if error:
        return error
    try:
        query = ResultsQuery.model_validate(request.args.to_dict())
    except ValidationError as exc:
        return _invalid(InvalidInput(messages_of(exc, ResultsQuery)))
    rows = result_service.recent_results(endpoint.id, limit=query.limit, since=query.since)
    marks = maintenance.marks(endpoint.id, [r.checked_at for r in rows])
    return jsonify({"endpointId": endpoint.id,
                    "results": [{**r.to_dict(), "inMaintenance": mark} for r, mark in zip(rows, marks)]})
