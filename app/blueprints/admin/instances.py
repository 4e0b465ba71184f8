"""The cluster's instances: who checks from where, and how each one is doing.

On a primary: every registered instance with its status, last heartbeat,
configuration version, outbox and system load, refreshed live; an
administrator can remove an instance (its token is revoked at once). On a
dependent: its own link to the primary. On a standalone instance: how to
make it part of a cluster.
"""
from __future__ import annotations

from flask import abort, flash, make_response, redirect, render_template, request, url_for

from app.blueprints.admin import bp
from app.blueprints.admin.signin import changes_configuration
from app.extensions import db
from app.models import MonitoringInstance, utcnow
from app.services import configuration, failover
from app.services.sync import dependent, primary

REFRESH_SECONDS = 10


@bp.get("/instances")
def instances():
    """The page; an HTMX request (the live refresh) gets the table's rows."""
    state = configuration.snapshot()
    role = state.role
    if request.headers.get("HX-Request"):
        if not state.is_primary:
            response = make_response("", 286)  # nothing to refresh here: htmx stops polling
        else:
            response = make_response(render_template("partials/instance_rows.html", rows=primary.registry()))
    else:
        context = {"role": role, "refresh": REFRESH_SECONDS, "now": utcnow(), "state": state,
                   "events": configuration.cluster_events(limit=20) if state.is_clustered else [],
                   "members": len(failover.members()) if state.is_clustered else 0}
        if state.is_primary:
            context["rows"] = primary.registry()
        elif state.is_clustered:
            context["link"] = dependent.link_status()
        response = make_response(render_template("admin/instances.html", **context))
    # One URL, two answers: a cache must never hand the rows back as the page.
    response.headers["Vary"] = "HX-Request"
    return response


@bp.post("/instances/<instance_id>/remove")
@changes_configuration
def remove_instance(instance_id: str):
    if not configuration.is_primary():
        abort(404)
    instance = db.session.get(MonitoringInstance, instance_id)
    if instance is None:
        abort(404, description="No such instance.")
    if instance_id == configuration.instance_id():
        flash("The primary cannot remove itself.", "error")
        return redirect(url_for("admin.instances"), code=303)
    name = instance.name
    primary.delete_instance(instance_id)
    flash(f"Instance “{name}” removed and its token revoked. If it still runs with the join secret "
          "it will register again: stop it, or change SYNC_SHARED_SECRET, to keep it out.", "info")
    return redirect(url_for("admin.instances"), code=303)
