"""The cluster's instances: who checks from where, and how each one is doing.

On a primary: the instance manager. Every registered instance with its
role, epoch, health, heartbeat lag, results per minute, sync errors,
outbox, configuration version and load, refreshed live; an administrator
changes an instance's failover order in place, removes an instance (its
token is revoked at once), promotes a candidate or demotes this primary
(the failover service's own hand-over, as the sync API's promote and demote
do). On a dependent: its link to the primary and the membership as the
primary keeps it. On a standalone instance: how to make it part of a
cluster.
"""
from __future__ import annotations

import re

from flask import abort, flash, make_response, redirect, render_template, request, url_for

from app.blueprints.admin import bp
from app.blueprints.admin.signin import changes_configuration
from app.extensions import db
from app.models import MonitoringInstance, utcnow
from app.services import configuration, failover
from app.services.sync import dependent, primary

REFRESH_SECONDS = 10
# The range the failover order takes (the JSON API's, and the sync schema's).
MAX_FAILOVER_ORDER = 10_000
_WHOLE_NUMBER = re.compile(r"-?[0-9]+")


@bp.get("/instances")
def instances():
    """The page; an HTMX request (the live refresh) gets the table's rows."""
    if request.headers.get("HX-Request"):
        if not configuration.is_primary():
            response = make_response("", 286)  # nothing to refresh here: htmx stops polling
        else:
            response = make_response(render_template("partials/instance_rows.html", rows=primary.registry(),
                                                     max_order=MAX_FAILOVER_ORDER))
    else:
        response = make_response(_page())
    # One URL, two answers: a cache must never hand the rows back as the page.
    response.headers["Vary"] = "HX-Request"
    return response


def _page(order_error: dict | None = None):
    state = configuration.snapshot()
    members = failover.members() if state.is_clustered else []
    context = {"role": state.role, "refresh": REFRESH_SECONDS, "now": utcnow(), "state": state,
               "events": configuration.cluster_events(limit=20) if state.is_clustered else [],
               "members": len(members), "order_error": order_error, "max_order": MAX_FAILOVER_ORDER}
    if state.is_primary:
        context["rows"] = primary.registry()
    elif state.is_clustered:
        context["link"] = dependent.link_status() if state.is_dependent else None
        context["membership"] = members
    return render_template("admin/instances.html", **context)


def _member_or_404(instance_id: str) -> MonitoringInstance:
    if not configuration.is_primary():
        abort(404)
    instance = db.session.get(MonitoringInstance, instance_id)
    if instance is None:
        abort(404, description="No such instance.")
    return instance


@bp.post("/instances/<instance_id>/failover-order")
@changes_configuration
def set_failover_order(instance_id: str):
    """Change an instance's failover order; every member receives it with
    the configuration. Bad input changes nothing and says why."""
    instance = _member_or_404(instance_id)
    raw = (request.form.get("failover_order") or "").strip()
    order, problem = _parse_failover_order(raw)
    if problem:
        error = {"instance_id": instance_id, "value": raw,
                 "message": f"Failover order of “{instance.name}”: {problem} Nothing was changed."}
        return _page(order_error=error), 400
    before = instance.failover_order
    failover.set_failover_order(instance_id, order)
    if order == before:
        flash(f"The failover order of “{instance.name}” was already {order}.", "info")
    else:
        flash(f"Failover order of “{instance.name}” is now {order} (was {before}); every member receives it "
              "with the configuration.", "info")
    return redirect(url_for("admin.instances"), code=303)


def _parse_failover_order(raw: str) -> tuple[int | None, str | None]:
    """(order, None) or (None, what is wrong with ``raw``)."""
    expected = (f"it must be a whole number from 0 to {MAX_FAILOVER_ORDER:,} (0: never becomes the primary; "
                "lower numbers take over first).")
    if not raw:
        return None, f"a number is required; {expected}"
    if not _WHOLE_NUMBER.fullmatch(raw):
        return None, f"“{raw[:40]}” is not a whole number; {expected}"
    order = int(raw)
    if not 0 <= order <= MAX_FAILOVER_ORDER:
        return None, f"{order if len(raw) <= 40 else raw[:40] + '…'} is out of range; {expected}"
    return order, None


@bp.post("/instances/<instance_id>/promote")
@changes_configuration
def promote_instance(instance_id: str):
    """Hand the primary role to this candidate (as ``POST /sync/api/promote``
    on it would): this primary fences itself, votes for it, and it runs."""
    instance = _member_or_404(instance_id)
    if instance_id == configuration.instance_id():
        flash("This instance is the primary already.", "error")
        return redirect(url_for("admin.instances"), code=303)
    return _hand_over(instance_id, f"Promoting “{instance.name}”")


@bp.post("/instances/<instance_id>/demote")
@changes_configuration
def demote_instance(instance_id: str):
    """Demote this primary (as ``POST /sync/api/demote/<id>`` does): the next
    live candidate in failover order takes over."""
    _member_or_404(instance_id)
    if instance_id != configuration.instance_id():
        flash("Only the primary itself can be demoted; promote a candidate instead.", "error")
        return redirect(url_for("admin.instances"), code=303)
    return _hand_over(None, "Demoting this primary")


def _hand_over(successor_id: str | None, what: str):
    try:
        outcome = failover.demote_here(successor_id)
    except failover.FailoverRefused as exc:
        flash(f"{what} was refused: {exc}. Nothing changed.", "error")
        return redirect(url_for("admin.instances"), code=303)
    successor = db.session.get(MonitoringInstance, outcome["primaryId"])
    flash(f"“{successor.name if successor else outcome['primaryId']}” is the primary at epoch {outcome['epoch']}; "
          "this instance follows it and sends no alerts. Manage the cluster there.", "info")
    return redirect(url_for("admin.instances"), code=303)


@bp.post("/instances/<instance_id>/remove")
@changes_configuration
def remove_instance(instance_id: str):
    instance = _member_or_404(instance_id)
    if instance_id == configuration.instance_id():
        flash("The primary cannot remove itself.", "error")
        return redirect(url_for("admin.instances"), code=303)
    name = instance.name
    primary.delete_instance(instance_id)
    flash(f"Instance “{name}” removed and its token revoked. If it still runs with the join secret "
          "it will register again: stop it, or change SYNC_SHARED_SECRET, to keep it out.", "info")
    return redirect(url_for("admin.instances"), code=303)
