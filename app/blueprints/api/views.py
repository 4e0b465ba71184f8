"""Endpoints and their results over JSON. Views are thin: parse, call a
service, answer."""
from datetime import datetime

from flask import jsonify, request, url_for

from app.blueprints.api import bp
from app.blueprints.errors import json_body, json_error
from app.extensions import api_auth
from app.services import endpoints as endpoint_service
from app.services import consensus
from app.services import results as result_service
from app.services import configuration
from app.models import STATUS_DOWN, STATUS_PARTIAL, STATUS_PENDING, STATUS_UP

CONSENSUS_STATUSES = (STATUS_UP, STATUS_PARTIAL, STATUS_DOWN, STATUS_PENDING)


@bp.before_request
@api_auth.login_required
def _require_auth():
    """Every API route needs a signed-in user or an API key."""


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
    return [{**e.to_dict(), "consensus": views[e.id]} for e in endpoints]


def _answer(endpoint):
    return jsonify(_answers([endpoint])[0])


@bp.get("/endpoints")
def list_endpoints():
    wanted = request.args.get("consensus")
    if wanted is not None and wanted.upper() not in CONSENSUS_STATUSES:
        return json_error(400, "validation_error", f"consensus must be one of {', '.join(CONSENSUS_STATUSES)}",
                          fields={"consensus": f"must be one of {', '.join(CONSENSUS_STATUSES)}"})
    found = endpoint_service.list_endpoints(search=request.args.get("search"),
                                            status=wanted or request.args.get("status"))
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
        limit = int(request.args.get("limit", 100))
        if not 1 <= limit <= 1000:
            raise ValueError
    except ValueError:
        return json_error(400, "validation_error", "limit must be an integer from 1 to 1000",
                          fields={"limit": "must be an integer from 1 to 1000"})
    since = request.args.get("since")
    if since is not None:
        try:
            since = datetime.fromisoformat(since)
            if since.tzinfo is None:
                raise ValueError
        except ValueError:
            return json_error(400, "validation_error", "since must be an ISO 8601 time with a zone",
                              fields={"since": "must be an ISO 8601 time with a zone"})
    rows = result_service.recent_results(endpoint.id, limit=limit, since=since)
    return jsonify({"endpointId": endpoint.id, "results": [r.to_dict() for r in rows]})
