"""Maintenance windows over JSON, shaped like the notification services API.
Views are thin: parse, call ``app.services.maintenance``, answer with its
``to_dict`` (settings, kind, whether one is in progress, the next occurrence)."""
from flask import jsonify, request, url_for

from app.blueprints.api import bp
from app.blueprints.api.views import _invalid, _refuse_change
from app.blueprints.errors import json_body, json_error
from app.services import maintenance


def _window_or_404(window_id):
    window = maintenance.get_window(window_id)
    if window is None:
        return None, json_error(404, "not_found", f"no maintenance window with id {window_id}")
    return window, None


@bp.get("/maintenance-windows")
def list_maintenance_windows():
    return jsonify({"maintenanceWindows": [maintenance.to_dict(w) for w in maintenance.list_windows()]})


@bp.post("/maintenance-windows")
def create_maintenance_window():
    refused = _refuse_change()
    if refused:
        return refused
    data, error = json_body()
    if error:
        return error
    try:
        window = maintenance.create_window(data, strict=True)
    except maintenance.InvalidMaintenanceWindow as exc:
        return _invalid(exc)
    response = jsonify(maintenance.to_dict(window))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_maintenance_window", window_id=window.id)
    return response


@bp.get("/maintenance-windows/<int:window_id>")
def get_maintenance_window(window_id):
    window, error = _window_or_404(window_id)
    return error or jsonify(maintenance.to_dict(window))


@bp.route("/maintenance-windows/<int:window_id>", methods=["PUT", "PATCH"])
def update_maintenance_window(window_id):
    refused = _refuse_change()
    if refused:
        return refused
    window, error = _window_or_404(window_id)
    if error:
        return error
    data, error = json_body()
    if error:
        return error
    try:
        maintenance.update_window(window, data, partial=request.method == "PATCH", strict=True)
    except maintenance.InvalidMaintenanceWindow as exc:
        return _invalid(exc)
    return jsonify(maintenance.to_dict(window))


@bp.delete("/maintenance-windows/<int:window_id>")
def delete_maintenance_window(window_id):
    refused = _refuse_change()
    if refused:
        return refused
    window, error = _window_or_404(window_id)
    if error:
        return error
    maintenance.delete_window(window)
    return "", 204
