"""Endpoint pages: create, edit, pause, resume, delete, check now."""
from __future__ import annotations

import logging

from flask import abort, current_app, flash, redirect, render_template, request, url_for

from app.blueprints.redirects import local_path
from app.blueprints.admin import bp
from app.blueprints.admin.endpoint_form import (
    display_value, endpoint_input, errors_by_field, option_fields,
)
from app.blueprints.admin.signin import changes_configuration, current_user
from app.checks import CHECK_TYPES, run_check
from app.models import Endpoint
from app.models.endpoint import consensus_rule_text
from app.services import configuration
from app.services import endpoints as endpoint_service
from app.services.rate_limits import SlidingWindowLimit
from app.services.results import record_results

logger = logging.getLogger(__name__)

# A blank timeout follows the interval (see ``endpoints.default_timeout``).
DEFAULTS = {"intervalSeconds": "60", "timeoutSeconds": "", "failureThreshold": "1",
            "successThreshold": "1", "consensusRule": "majority", "certExpiryDays": "14"}


def _endpoint_or_404(endpoint_id: int) -> Endpoint:
    endpoint = endpoint_service.get_endpoint(endpoint_id)
    if endpoint is None:
        abort(404, description=f"There is no endpoint with id {endpoint_id}.")
    return endpoint


def _notification_choices(endpoint: Endpoint | None):
    """(services, ids checked) for the per-endpoint notification choice."""
    from app.services import notifications

    services = notifications.list_services()
    if endpoint is None:
        checked = {s.id for s in services if s.is_default}
    else:
        checked = {s.id for s in endpoint.notification_services}
    return services, checked


def _render_form(*, endpoint: Endpoint | None, values: dict, options: dict, errors: dict,
                 checked_services=None, status: int = 200):
    check_type = values.get("checkType") or "http"
    if check_type not in CHECK_TYPES:
        check_type = "http"  # the error next to the type says what was wrong
    services, checked = _notification_choices(endpoint)
    if checked_services is not None:
        checked = checked_services
    fields = option_fields(check_type)
    return render_template(
        "admin/endpoint_form.html", endpoint=endpoint, values=values, errors=errors,
        check_types=CHECK_TYPES, check_type=check_type, option_fields=fields,
        option_values={f.name: display_value(f, options) for f in fields},
        services=services, checked_services=checked, max_name_length=endpoint_service.MAX_NAME_LENGTH,
    ), status


def _values_of(endpoint: Endpoint) -> dict:
    return {
        "name": endpoint.name, "checkType": endpoint.check_type, "target": endpoint.target,
        "port": "" if endpoint.port is None else str(endpoint.port),
        "intervalSeconds": str(endpoint.interval_seconds), "timeoutSeconds": f"{endpoint.timeout_seconds:g}",
        "failureThreshold": str(endpoint.failure_threshold),
        "successThreshold": str(endpoint.success_threshold), "group": endpoint.group_name or "",
        "consensusRule": consensus_rule_text(endpoint.consensus_rule, endpoint.consensus_min_down),
        "certExpiryDays": str(endpoint.cert_expiry_days), "alertOnPartial": endpoint.alert_on_partial,
    }


def _posted_services() -> set[int]:
    return {int(v) for v in request.form.getlist("notificationServices") if v.isdigit() and len(v) < 10}


def _save(endpoint: Endpoint | None):
    """Validate the posted form and create or update; re-render with errors."""
    stored = dict(endpoint.options or {}) if endpoint is not None else None
    data, errors = endpoint_input(request.form, stored_options=stored)
    values = {k: request.form.get(k, "") for k in DEFAULTS | dict.fromkeys(
        ("name", "checkType", "target", "port", "group"))}
    values["alertOnPartial"] = request.form.get("alertOnPartial") == "on"
    services = _posted_services()
    if not errors:
        # The services are part of the one change: a service deleted while
        # this form was open is a field error, and nothing is saved.
        data["notificationServiceIds"] = sorted(services)
        try:
            if endpoint is None:
                endpoint = endpoint_service.create_endpoint(data)
                created = True
            else:
                data.setdefault("port", None)  # no port input: this type has no port
                endpoint_service.update_endpoint(endpoint, data, partial=True)
                created = False
        except endpoint_service.InvalidEndpoint as exc:
            errors = exc.errors
        else:
            flash(f"Endpoint “{endpoint.name}” {'added' if created else 'saved'}.", "info")
            return redirect(url_for("ui.endpoint_detail", endpoint_id=endpoint.id))
    return _render_form(endpoint=endpoint, values=values, options=data.get("options", {}),
                        errors=errors_by_field(errors), checked_services=services, status=422)


@bp.route("/endpoints/new", methods=["GET", "POST"])
@changes_configuration
def new_endpoint():
    if request.method == "POST":
        return _save(None)
    values = dict(DEFAULTS, checkType=request.args.get("checkType", "http"))
    if values["checkType"] not in CHECK_TYPES:
        values["checkType"] = "http"
    return _render_form(endpoint=None, values=values, options={}, errors={})


@bp.route("/endpoints/<int:endpoint_id>/edit", methods=["GET", "POST"])
@changes_configuration
def edit_endpoint(endpoint_id: int):
    endpoint = _endpoint_or_404(endpoint_id)
    if request.method == "POST":
        return _save(endpoint)
    return _render_form(endpoint=endpoint, values=_values_of(endpoint), options=dict(endpoint.options or {}),
                        errors={})


@bp.get("/endpoints/form-options")
@changes_configuration
def endpoint_form_options():
    """The option inputs of one check type (swapped in when the type changes).

    Refused like the forms it belongs to: with an endpoint's id it shows
    that endpoint's stored options (headers, body) as the edit page would.
    """
    check_type = request.args.get("checkType", "http")
    if check_type not in CHECK_TYPES:
        abort(400, description="Unknown check type.")
    endpoint = None
    options: dict = {}
    if request.args.get("endpoint", "").isdigit():
        endpoint = endpoint_service.get_endpoint(int(request.args["endpoint"]))
        if endpoint is not None and endpoint.check_type == check_type:
            options = dict(endpoint.options or {})
    fields = option_fields(check_type)
    return render_template("partials/endpoint_options.html", check_type=check_type,
                           kind=CHECK_TYPES[check_type], option_fields=fields, errors={},
                           option_values={f.name: display_value(f, options) for f in fields},
                           values={"port": request.args.get("port", "")},
                           endpoint_has_secret=bool(options.get("sasl_password")))


def _back_to(endpoint: Endpoint | None = None):
    target = local_path(request.form.get("next"))
    if target:
        return redirect(target, code=303)
    if endpoint is not None:
        return redirect(url_for("ui.endpoint_detail", endpoint_id=endpoint.id), code=303)
    return redirect(url_for("ui.dashboard"), code=303)


@bp.post("/endpoints/<int:endpoint_id>/pause")
@changes_configuration
def pause_endpoint(endpoint_id: int):
    endpoint = _endpoint_or_404(endpoint_id)
    endpoint_service.set_paused(endpoint, True)
    flash(f"“{endpoint.name}” is paused: it is not checked until resumed.", "info")
    return _back_to(endpoint)


@bp.post("/endpoints/<int:endpoint_id>/resume")
@changes_configuration
def resume_endpoint(endpoint_id: int):
    endpoint = _endpoint_or_404(endpoint_id)
    endpoint_service.set_paused(endpoint, False)
    flash(f"“{endpoint.name}” is resumed and will be checked at once.", "info")
    return _back_to(endpoint)


@bp.post("/endpoints/<int:endpoint_id>/delete")
@changes_configuration
def delete_endpoint(endpoint_id: int):
    endpoint = _endpoint_or_404(endpoint_id)
    name = endpoint.name
    endpoint_service.delete_endpoint(endpoint)
    flash(f"“{name}” and its history are deleted.", "info")
    return redirect(url_for("ui.dashboard"), code=303)


# Open to viewers (it only runs what an administrator configured), so it is
# limited per user: the button must not become a way to send a stream of
# requests to a monitored target.
CHECKS_NOW_PER_MINUTE = 6


def _check_now_limit() -> SlidingWindowLimit:
    # One per app, so each app (and each test's app) counts on its own.
    return current_app.extensions.setdefault("monitor_check_now_limit",
                                             SlidingWindowLimit(CHECKS_NOW_PER_MINUTE, 60))


@bp.post("/endpoints/<int:endpoint_id>/check")
def check_endpoint_now(endpoint_id: int):
    """Run the check here and now, store its result, show it inline.

    Allowed on a dependent too: the result is this location's own. At most
    ``CHECKS_NOW_PER_MINUTE`` per user.
    """
    endpoint = _endpoint_or_404(endpoint_id)
    wait = _check_now_limit().take(current_user().id)
    if wait is not None:
        message = (f"You have used “Check now” {CHECKS_NOW_PER_MINUTE} times in the last minute; "
                   f"try again in {wait} second{'s' if wait != 1 else ''}. "
                   "Endpoints are also checked on their own schedule.")
        if request.headers.get("HX-Request"):
            page = render_template("partials/message.html", message=message, kind="error")
        else:
            page = render_template("admin/message.html", title="Too many checks", message=message)
        return page, 429, {"Retry-After": str(wait)}
    instance_id, location = configuration.instance_identity()
    result = run_check(endpoint.check_type, endpoint.target, endpoint.port, endpoint.timeout_seconds,
                       dict(endpoint.options or {}), location=location)
    result.metadata["manual"] = True
    record_results([(endpoint.id, result)], instance_id=instance_id, location=location)
    logger.info("endpoint %s (%s) checked on demand: %s", endpoint.id, endpoint.name, result.status)
    if request.headers.get("HX-Request"):
        return render_template("partials/check_result.html", result=result, endpoint=endpoint)
    flash(f"Checked “{endpoint.name}”: {result.status}"
          + (f" ({result.failure_reason})" if result.failure_reason else ""),
          "info" if result.is_ok else "error")
    return _back_to(endpoint)

