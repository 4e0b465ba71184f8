"""Maintenance windows: the list (in progress, next occurrence), the form to
add or change one, delete. Built on ``app.services.maintenance``; viewers
and dependents see the list without its controls."""
from __future__ import annotations

from zoneinfo import ZoneInfo, available_timezones

from flask import abort, flash, redirect, render_template, request, url_for

from app.blueprints.admin import bp
from app.blueprints.admin.signin import changes_configuration
from app.services import maintenance, status_pages
from app.services.endpoints import list_endpoints
from app.services.validation_messages import sentence

LABELS = {"title": "Title", "description": "Description", "startsAt": "Start", "endsAt": "End",
          "cronExpression": "Cron expression", "timeZone": "Time zone", "durationMinutes": "Duration",
          "endpointIds": "Endpoints", "groups": "Groups", "isActive": "Active"}


def _window_or_404(window_id: int):
    window = maintenance.get_window(window_id)
    if window is None:
        abort(404, description=f"There is no maintenance window with id {window_id}.")
    return window


def _form_input() -> dict:
    """The form as input fields: only the chosen kind's schedule, and times
    as typed (read in the time zone chosen)."""
    form = request.form
    data = {"title": form.get("title", ""), "description": form.get("description", ""),
            "timeZone": form.get("timeZone", "").strip() or None,
            "endpointIds": form.getlist("endpointIds"), "groups": form.getlist("groups"),
            "isActive": form.get("isActive") == "on"}
    if form.get("kind") == "recurring":
        data.update(cronExpression=form.get("cronExpression", ""),
                    durationMinutes=form.get("durationMinutes", "").strip() or None)
    else:
        data.update(startsAt=form.get("startsAt", "").strip() or None, endsAt=form.get("endsAt", "").strip() or None)
    return data


def _values(window) -> dict:
    """What the form shows for ``window`` (a new one: a one-off in UTC)."""
    if window is None:
        return {"kind": "oneOff", "timeZone": "UTC", "isActive": True, "endpointIds": [], "groups": [],
                "durationMinutes": "60"}
    values = {**maintenance.input_fields(window), "kind": "recurring" if window.is_recurring else "oneOff"}
    zone = ZoneInfo(window.time_zone or "UTC")
    for name, moment in (("startsAt", window.starts_at), ("endsAt", window.ends_at)):
        # datetime-local inputs show wall-clock time in the window's zone.
        values[name] = moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M") if moment else ""
    values["timeZone"] = window.time_zone or "UTC"
    return values


def _messages(errors: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, message in errors.items():
        field = key.split(".")[0]
        out.setdefault(field, sentence(LABELS.get(field, field), message))
    return out


@bp.get("/maintenance")
def maintenance_windows():
    windows = [maintenance.to_dict(w) for w in maintenance.list_windows()]
    names = {e.id: e.name for e in list_endpoints()}
    return render_template("admin/maintenance.html", windows=windows, names=names)


@bp.route("/maintenance/new", methods=["GET", "POST"])
@bp.route("/maintenance/<int:window_id>/edit", methods=["GET", "POST"])
@changes_configuration
def edit_maintenance_window(window_id: int | None = None):
    window = _window_or_404(window_id) if window_id is not None else None
    values, errors = _values(window), {}
    if request.method == "POST":
        data = _form_input()
        values = {**values, **{k: v for k, v in data.items() if v is not None}, "kind": request.form.get("kind"),
                  "startsAt": request.form.get("startsAt", ""), "endsAt": request.form.get("endsAt", ""),
                  "cronExpression": request.form.get("cronExpression", ""),
                  "durationMinutes": request.form.get("durationMinutes", "")}
        try:
            if window is None:
                window = maintenance.create_window(data)
            else:
                maintenance.update_window(window, data, partial=False)
        except maintenance.InvalidMaintenanceWindow as exc:
            errors = _messages(exc.errors)
        else:
            flash(f"Maintenance window “{window.title}” saved.", "info")
            return redirect(url_for("admin.maintenance_windows"), code=303)
    chosen = {str(i) for i in values.get("endpointIds") or []}
    return render_template("admin/maintenance_form.html", window=window, values=values, errors=errors,
                           endpoints=list_endpoints(), groups=[name for name, _ in status_pages.groups()],
                           chosen=chosen, zones=sorted(available_timezones()),
                           cron_example=maintenance.CRON_EXAMPLE), 422 if errors else 200


@bp.post("/maintenance/<int:window_id>/delete")
@changes_configuration
def delete_maintenance_window(window_id: int):
    window = _window_or_404(window_id)
    title = window.title
    maintenance.delete_window(window)
    flash(f"Maintenance window “{title}” deleted.", "info")
    return redirect(url_for("admin.maintenance_windows"), code=303)
