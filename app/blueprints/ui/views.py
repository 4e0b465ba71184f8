"""Pages. The full UI (sign-in, dashboard, forms) is its own piece of work;
this is the read-only overview served until then."""
from flask import current_app, jsonify, render_template

from app import __version__
from app.blueprints.ui import bp
from app.services import configuration
from app.services.endpoints import list_endpoints


@bp.get("/")
def overview():
    endpoints = list_endpoints()
    return render_template("ui/overview.html", endpoints=endpoints,
                           settings=current_app.config["SETTINGS"], role=configuration.role(),
                           counts={s: sum(1 for e in endpoints if e.status == s)
                                   for s in ("UP", "DOWN", "PENDING")})


@bp.get("/health")
def health():
    return jsonify({"status": "ok", "version": __version__})
