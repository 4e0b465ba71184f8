"""Notification services over JSON, shaped like the endpoints API. Views are
thin: parse, call ``app.services.notifications``, answer with its
``public_view`` (secrets masked as the UI masks them)."""
from flask import jsonify, request, url_for

from app.blueprints.api import bp
from app.blueprints.api.views import _invalid, _refuse_change
from app.blueprints.errors import json_body, json_error
from app.services import notifications


def _service_or_404(service_id):
    service = notifications.get_service(service_id)
    if service is None:
        return None, json_error(404, "not_found", f"no notification service with id {service_id}")
    return service, None


@bp.get("/notification-services")
def list_notification_services():
    return jsonify({"notificationServices": [notifications.public_view(s) for s in notifications.list_services()]})


@bp.post("/notification-services")
def create_notification_service():
    refused = _refuse_change()
    if refused:
        return refused
    data, error = json_body()
    if error:
        return error
    try:
        service = notifications.create_service(data, strict=True)
    except notifications.InvalidNotificationService as exc:
        return _invalid(exc)
    response = jsonify(notifications.public_view(service))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_notification_service", service_id=service.id)
    return response


@bp.get("/notification-services/<int:service_id>")
def get_notification_service(service_id):
    service, error = _service_or_404(service_id)
    return error or jsonify(notifications.public_view(service))


@bp.route("/notification-services/<int:service_id>", methods=["PUT", "PATCH"])
def update_notification_service(service_id):
    refused = _refuse_change()
    if refused:
        return refused
    service, error = _service_or_404(service_id)
    if error:
        return error
    data, error = json_body()
    if error:
        return error
    try:
        notifications.update_service(service, data, partial=request.method == "PATCH", strict=True)
    except notifications.InvalidNotificationService as exc:
        return _invalid(exc)
    return jsonify(notifications.public_view(service))


@bp.delete("/notification-services/<int:service_id>")
def delete_notification_service(service_id):
    refused = _refuse_change()
    if refused:
        return refused
    service, error = _service_or_404(service_id)
    if error:
        return error
    notifications.delete_service(service)
    return "", 204


@bp.post("/notification-services/<int:service_id>/test")
def test_notification_service(service_id):
    """Send a test message now and answer with the delivery (``status``
    ``sent`` or ``failed``, the reason in ``lastError``).

    Administrators only, and not on a dependent, as in the UI. The body must
    be ``{}`` sent as JSON: a request with no body could come from another
    site's form, with basic-auth credentials the browser has cached.
    """
    refused = _refuse_change()
    if refused:
        return refused
    service, error = _service_or_404(service_id)
    if error:
        return error
    data, error = json_body()
    if error:
        return error
    if data:
        return json_error(400, "validation_error", f"a test takes no fields, send {{}} ({', '.join(data)})",
                          fields={field: "is not a field: a test takes none" for field in data})
    return jsonify(notifications.send_test(service.id).to_dict())
