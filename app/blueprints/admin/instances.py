"""The cluster's instances: who checks from where, and how each one is doing.

On a primary: every registered instance with its status, last heartbeat,
configuration version, outbox and system load, refreshed live; an
administrator can remove an instance (its token is revoked at once). On a
dependent: its own link to the primary. On a standalone instance: how to
make it part of a cluster.
"""
from __future__ import annotations

from datetime import datetime

from flask import abort, flash, redirect, render_template, url_for

from app.blueprints.admin import bp
from app.blueprints.admin.signin import changes_configuration
from app.config import ROLE_DEPENDENT, ROLE_PRIMARY
from app.extensions import db
from app.models import MonitoringInstance, utcnow
from app.services import configuration
from app.services.sync import dependent, primary

REFRESH_SECONDS = 10


def _instance_rows() -> list[dict]:
    now = utcnow()
    own_id = configuration.instance_id()
    current_version = configuration.config_version()
    rows = []
    for instance in primary.list_instances():
        connection = instance.connection_info or {}
        rows.append({
            "instance": instance,
            "is_self": instance.id == own_id,
            "heartbeat_age": _age(instance.last_heartbeat_at, now),
            "config_behind": max(0, current_version - instance.config_version) if instance.id != own_id else 0,
            "outbox": connection.get("outboxSize"),
            "system": instance.system_info or {},
        })
    return rows


def _dependent_link() -> dict:
    last_success = configuration.get_state(dependent.LAST_SUCCESS)
    return {
        "primary_url": configuration.primary_url(),
        "registered": bool(configuration.get_state(dependent.TOKEN)),
        "failures": int(configuration.get_state(dependent.FAILURES, "0")),
        "last_success_age": _age(datetime.fromisoformat(last_success), utcnow()) if last_success else None,
        "outbox": dependent.outbox_size(),
        "config_version": configuration.config_version(),
    }


def _age(moment: datetime | None, now: datetime) -> int | None:
    return None if moment is None else max(0, int((now - moment).total_seconds()))


@bp.get("/instances")
def instances():
    role = configuration.role()
    context = {"role": role, "refresh": REFRESH_SECONDS}
    if role == ROLE_PRIMARY:
        context["rows"] = _instance_rows()
    elif role == ROLE_DEPENDENT:
        context["link"] = _dependent_link()
    return render_template("admin/instances.html", **context)


@bp.get("/instances/rows")
def instance_rows():
    """The table body alone, for the page's live refresh."""
    if configuration.role() != ROLE_PRIMARY:
        abort(404)
    return render_template("admin/instance_rows.html", rows=_instance_rows())


@bp.post("/instances/<instance_id>/remove")
@changes_configuration
def remove_instance(instance_id: str):
    if configuration.role() != ROLE_PRIMARY:
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
