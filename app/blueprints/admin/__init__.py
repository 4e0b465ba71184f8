"""Accounts and configuration pages: sign-in, first-run setup, endpoints,
API keys, notification services, public status pages and the cluster's
instances."""
from flask import Blueprint

bp = Blueprint("admin", __name__, template_folder="templates")


def init_app(app) -> None:
    """Sessions, CSRF and the sign-in requirement for the web surface."""
    from app.blueprints.admin import signin

    signin.init_app(app)


from app.blueprints.admin import (  # noqa: E402,F401
    api_keys, endpoints, instances, maintenance, notifications, signin, status_pages,
)
