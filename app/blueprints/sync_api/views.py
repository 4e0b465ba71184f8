"""Sync API routes. Liveness is unauthenticated; the rest come with the
primary/dependent issue."""
from flask import current_app, jsonify

from app import __version__
from app.blueprints.sync_api import bp
from app.services import configuration


@bp.get("/health")
def health():
    """Liveness for peers and load balancers: no secrets, no auth."""
    settings = current_app.config["SETTINGS"]
    return jsonify({
        "status": "ok",
        "instanceId": configuration.instance_id(),
        "instanceName": settings.instance_name,
        "location": settings.instance_location,
        "role": configuration.role(),
        "epoch": configuration.epoch(),
        "primaryUrl": configuration.primary_url(),
        "version": __version__,
    })
