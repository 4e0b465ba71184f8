"""Notification services: list, create, edit, delete, send a test; the
delivery log with failed deliveries and a retry button.

Built on ``app.services.notifications``: secrets are shown masked, and a
secret left blank on edit keeps the stored value.
"""
from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for

from app.blueprints.admin import bp
from app.blueprints.admin.signin import changes_configuration
from app.services import notifications


def _kinds() -> dict[str, dict]:
    return {k["kind"]: k for k in notifications.kinds()}


def _service_or_404(service_id: int):
    service = notifications.get_service(service_id)
    if service is None:
        abort(404, description=f"There is no notification service with id {service_id}.")
    return service


def _form_input(kind: str, *, editing: bool) -> tuple[dict, dict[str, str]]:
    form = request.form
    config: dict = {}
    errors: dict[str, str] = {}
    url = (form.get("url") or "").strip()
    if url or not editing:
        config["url"] = url
    timeout = (form.get("timeoutSeconds") or "").strip()
    if timeout:
        config["timeoutSeconds"] = timeout
    if kind == "webhook":
        raw = (form.get("headers") or "").strip()
        if raw or not editing:
            headers = {}
            for line in raw.splitlines():
                if not line.strip():
                    continue
                name, sep, value = line.partition(":")
                if not sep or not name.strip():
                    errors["config.headers"] = f"Each line must be 'Name: value' (got {line.strip()!r})."
                    break
                headers[name.strip()] = value.strip()
            config["headers"] = headers
    data = {"name": (form.get("name") or "").strip(), "kind": kind, "config": config,
            "isEnabled": form.get("isEnabled") == "on", "isDefault": form.get("isDefault") == "on"}
    return data, errors


def _messages(errors: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, message in errors.items():
        field = key.split(".", 1)[1] if key.startswith("config.") else key
        out.setdefault(field.split(".")[0], message[:1].upper() + message[1:])
    return out


RECENT_DELIVERIES = 30


def _service_names(services: list[dict]) -> dict[int, str]:
    return {s["id"]: s["name"] for s in services}


@bp.get("/notifications")
def notification_services():
    services = [notifications.public_view(s) for s in notifications.list_services()]
    return render_template("admin/notifications.html", services=services,
                           deliveries=notifications.recent_deliveries(RECENT_DELIVERIES),
                           failed=notifications.failed_deliveries(30),
                           names=_service_names(services))


@bp.route("/notifications/new", methods=["GET", "POST"])
@bp.route("/notifications/<int:service_id>/edit", methods=["GET", "POST"])
@changes_configuration
def edit_notification_service(service_id: int | None = None):
    service = _service_or_404(service_id) if service_id is not None else None
    view = notifications.public_view(service) if service is not None else None
    kinds = _kinds()
    kind = request.values.get("kind") or (service.kind if service else "apprise")
    if kind not in kinds:
        kind = "apprise"
    errors: dict[str, str] = {}
    values = {"name": view["name"] if view else "", "isEnabled": view["isEnabled"] if view else True,
              "isDefault": view["isDefault"] if view else False,
              "timeoutSeconds": (view["config"].get("timeoutSeconds", "") if view else "")}
    if request.method == "POST":
        data, errors = _form_input(kind, editing=service is not None)
        values.update(name=data["name"], isEnabled=data["isEnabled"], isDefault=data["isDefault"],
                      timeoutSeconds=request.form.get("timeoutSeconds", ""))
        if not errors:
            try:
                if service is None:
                    service = notifications.create_service(data)
                else:
                    notifications.update_service(service, data)
            except notifications.InvalidNotificationService as exc:
                errors = exc.errors
            else:
                flash(f"Notification service “{service.name}” saved.", "info")
                return redirect(url_for("admin.notification_services"), code=303)
    status = 422 if errors else 200
    if request.headers.get("HX-Request") and request.method == "GET":
        template = "partials/notification_fields.html"
    else:
        template = "admin/notification_form.html"
    return render_template(template, service=view, kind=kind, kinds=kinds, values=values,
                           errors=_messages(errors)), status


@bp.post("/notifications/<int:service_id>/delete")
@changes_configuration
def delete_notification_service(service_id: int):
    service = _service_or_404(service_id)
    name = service.name
    notifications.delete_service(service)
    flash(f"Notification service “{name}” deleted.", "info")
    return redirect(url_for("admin.notification_services"), code=303)


@bp.post("/notifications/<int:service_id>/test")
@changes_configuration
def test_notification_service(service_id: int):
    """Send a test message now; the outcome shows inline (HTMX) or as a flash.

    Administrators only: a test is a request to the outside world, and a
    dependent holds no secrets to send one with (only the primary alerts).
    """
    try:
        delivery = notifications.send_test(service_id)
    except LookupError:
        abort(404, description=f"There is no notification service with id {service_id}.")
    ok = delivery.status == "sent"
    message = "Test message sent." if ok else f"Test failed: {delivery.last_error}"
    if request.headers.get("HX-Request"):
        # The outcome where the button is, and the deliveries table (out of
        # band) with the test in it.
        services = [notifications.public_view(s) for s in notifications.list_services()]
        return (render_template("partials/message.html", message=message, kind="info" if ok else "error")
                + render_template("partials/recent_deliveries.html", oob=True, names=_service_names(services),
                                  deliveries=notifications.recent_deliveries(RECENT_DELIVERIES)))
    flash(message, "info" if ok else "error")
    return redirect(url_for("admin.notification_services"), code=303)


@bp.post("/notifications/deliveries/<int:delivery_id>/retry")
@changes_configuration
def retry_notification_delivery(delivery_id: int):
    if notifications.retry_delivery(delivery_id):
        flash("Delivery queued again: it is retried within a few seconds.", "info")
    else:
        flash("Only a delivery that failed can be retried.", "error")
    return redirect(url_for("admin.notification_services"), code=303)
