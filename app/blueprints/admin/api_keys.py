"""API keys for the JSON API: create (shown once) and revoke."""
from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from app.blueprints.admin import bp
from app.blueprints.admin.signin import current_user
from app.extensions import db
from app.models import ApiKey
from app.services import accounts


def _keys():
    user = current_user()
    return list(db.session.execute(
        select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.revoked_at.is_not(None), ApiKey.created_at.desc())
    ).scalars())


@bp.route("/api-keys", methods=["GET", "POST"])
def api_keys():
    new_key = error = None
    name = ""
    status = 200
    if request.method == "POST":
        name = (request.form.get("name") or "").strip()
        try:
            row, new_key = accounts.create_api_key(current_user().email, name)
        except accounts.InvalidAccount as exc:
            error = str(exc).capitalize() + "."
            status = 422
        else:
            name = ""
            # Shown in this response only: the key is not stored, only its hash.
            flash(f"API key “{row.name}” created. Copy it now: it is not shown again.", "info")
    return render_template("admin/api_keys.html", keys=_keys(), new_key=new_key, error=error,
                           name=name), status


@bp.post("/api-keys/<int:key_id>/revoke")
def revoke_api_key(key_id: int):
    key = db.session.get(ApiKey, key_id)
    if key is None or key.user_id != current_user().id:
        abort(404, description="No such API key.")
    accounts.revoke_api_key(key_id)
    flash(f"API key “{key.name}” revoked: requests with it are refused from now on.", "info")
    return redirect(url_for("admin.api_keys"), code=303)
