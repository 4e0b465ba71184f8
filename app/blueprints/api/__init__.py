"""The JSON API under /api/v1, for scripting the monitor."""
from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from app.blueprints.api import auth, config, instances, maintenance_windows, notification_services, openapi, views  # noqa: E402,F401
