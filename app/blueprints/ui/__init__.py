"""Server-rendered pages (HTMX fragments for live parts)."""
from flask import Blueprint

bp = Blueprint("ui", __name__, template_folder="templates")

from app.blueprints.ui import map, operations, views  # noqa: E402,F401
