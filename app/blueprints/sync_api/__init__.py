"""The sync API under /sync/api, served on SYNC_API_PORT by every instance."""
from flask import Blueprint

bp = Blueprint("sync_api", __name__, url_prefix="/sync/api")

from app.blueprints.sync_api import openapi, views  # noqa: E402,F401
