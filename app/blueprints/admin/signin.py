"""Sign-in, sign-out and first-run setup; the sign-in requirement itself.

Sessions are Flask's signed cookies: HttpOnly, SameSite=Lax, Secure
whenever the request came over HTTPS, idle for at most ``IDLE_LIFETIME`` and
at most ``MAX_SESSION_AGE`` old. A session names the user and carries a
fingerprint of the password hash, so changing a password ends every other
session of that user.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import time
from datetime import timedelta
from functools import wraps
from urllib.parse import urlsplit

from flask import (
    abort, current_app, flash, g, redirect, render_template, request, session, url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError
from sqlalchemy import select

from app.blueprints.redirects import local_path
from app.blueprints.admin import bp
from app.extensions import csrf, db
from app.models import User
from app.services import accounts, configuration, login_throttle
from app.services.validation_messages import sentence

logger = logging.getLogger(__name__)

IDLE_LIFETIME = timedelta(hours=12)
MAX_SESSION_AGE = timedelta(days=7)
# Reachable without signing in. Everything else on the web surface needs a
# session; the JSON API authenticates each request itself, and so does
# /metrics (an API key, METRICS_TOKEN or a session; ui/operations.py).
PUBLIC_ENDPOINTS = frozenset({"static", "ui.health", "ui.status_page", "admin.login", "admin.setup",
                              "ui.healthz", "ui.readyz", "ui.prometheus_metrics", "ui.favicon"})
# Pages that look the same to everyone (and may be cached as such): they
# never show who is signed in.
ANONYMOUS_PAGES = frozenset({"ui.status_page"})


class _SessionInterface(SecureCookieSessionInterface):
    def get_cookie_secure(self, app):
        # Secure whenever the browser reached us over HTTPS, so a plain-HTTP
        # loopback install still works.
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)

    def save_session(self, app, session, response):
        if request.endpoint in ANONYMOUS_PAGES:
            return  # no cookie and no "Vary: Cookie" on a page cached as public
        super().save_session(app, session, response)


def init_app(app) -> None:
    app.config.update(
        # Browsers keep cookies per host, not per port: instances on one
        # host (a primary and a dependent side by side) must not overwrite
        # each other's sessions.
        SESSION_COOKIE_NAME=f"monitor_session_{app.config['SETTINGS'].port}",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=IDLE_LIFETIME,
        # Tokens live as long as the session; a dashboard left open for
        # hours must still be able to pause an endpoint.
        WTF_CSRF_TIME_LIMIT=None,
    )
    app.session_interface = _SessionInterface()
    csrf.init_app(app)
    from app.blueprints.api import bp as api_bp

    csrf.exempt(api_bp)
    app.before_request(_require_sign_in)
    app.after_request(_security_headers)
    app.register_error_handler(CSRFError, _csrf_refused)
    app.context_processor(_template_context)


def _security_headers(response):
    """No framing (clickjacking), no content sniffing, no full URLs to
    other sites. Public status pages may be framed: people embed them."""
    if request.endpoint not in ANONYMOUS_PAGES:
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def current_user() -> User | None:
    """The signed-in user of this request, or None."""
    if "user" not in g:
        g.user = _session_user()
    return g.user


def _fingerprint(user: User) -> str:
    return hmac.new(current_app.secret_key.encode(), user.password_hash.encode(), hashlib.sha256).hexdigest()[:16]


def _session_user() -> User | None:
    user_id, signed_in_at = session.get("user_id"), session.get("signed_in_at", 0)
    if not user_id or time.time() - signed_in_at > MAX_SESSION_AGE.total_seconds():
        return None
    user = db.session.get(User, user_id)
    if user is None or not hmac.compare_digest(session.get("fingerprint", ""), _fingerprint(user)):
        return None
    return user


def _start_session(user: User) -> None:
    session.clear()  # a new session on sign-in: nothing carries over
    session.permanent = True
    session.update(user_id=user.id, fingerprint=_fingerprint(user), signed_in_at=int(time.time()))


def is_read_only() -> bool:
    """A dependent's (or a fenced primary's) configuration belongs to the primary."""
    if "read_only" not in g:
        g.read_only = not configuration.accepts_configuration()
    return g.read_only


VIEWER_MESSAGE = ("Your account can see everything here but change nothing; "
                  "an administrator can make this change.")


def read_only_message() -> str:
    primary = configuration.primary_url() or "its primary"
    return (f"This instance is a dependent: its configuration is managed by the primary at {primary}. "
            "Make this change there.")


def changes_configuration(view):
    """Refuse a configuration change on a dependent, saying where to make it,
    and from a viewer (a user who is not an administrator)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if is_read_only():
            return render_template("admin/message.html", title="Read-only instance",
                                   message=read_only_message()), 409
        user = current_user()
        if user is not None and not user.is_admin:
            return render_template("admin/message.html", title="Administrators only",
                                   message=VIEWER_MESSAGE), 403
        return view(*args, **kwargs)

    return wrapper


def _template_context():
    user = (current_user() if request.blueprint in ("ui", "admin") and request.endpoint not in ANONYMOUS_PAGES
            else None)
    dependent = is_read_only() if user else False
    return {"current_user": user,
            # Controls that change configuration are hidden on a dependent and for viewers.
            "read_only": dependent or (user is not None and not user.is_admin),
            "dependent": dependent,
            "fenced": dependent and configuration.is_fenced(),
            "primary_url": configuration.primary_url() if dependent else None}


def _no_users_yet() -> bool:
    # Once a user exists the answer can only change by deleting every user
    # from the command line; one query per process is enough.
    state = current_app.extensions.setdefault("monitor_signin", {})
    if not state.get("users_exist"):
        state["users_exist"] = accounts.user_count() > 0
    return not state["users_exist"]


def _require_sign_in():
    if request.blueprint not in ("ui", "admin") or request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if _no_users_yet():
        return _go_to(url_for("admin.setup"))
    if current_user() is None:
        return _go_to(url_for("admin.login", next=_current_path()))
    return None


def _current_path() -> str:
    if request.headers.get("HX-Request"):
        # A fragment's own URL is no page to come back to.
        current = urlsplit(request.headers.get("HX-Current-URL", ""))
        return (current.path or "/") + (f"?{current.query}" if current.query else "")
    return request.full_path.rstrip("?")


def _go_to(location: str):
    if request.headers.get("HX-Request"):
        # htmx follows HX-Redirect with a full page load; a plain redirect
        # would swap the sign-in page into a table cell.
        return "", 401, {"HX-Redirect": location}
    return redirect(location)


def _safe_next(target: str | None) -> str:
    # Only paths on this site: an open redirect would make the sign-in page
    # a phishing tool.
    return local_path(target) or url_for("ui.dashboard")


def _client_ip() -> str:
    return request.remote_addr or "unknown"


def _csrf_refused(exc: CSRFError):
    message = ("The form was stale or did not come from this site (CSRF check failed: "
               f"{exc.description}). Reload the page and try again.")
    if request.headers.get("HX-Request"):
        return render_template("partials/message.html", message=message, kind="error"), 400
    return render_template("admin/message.html", title="Request refused", message=message), 400


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with email and password (rate-limited per address and account)."""
    if _no_users_yet():
        return redirect(url_for("admin.setup"))
    next_url = _safe_next(request.values.get("next"))
    if request.method != "POST":  # GET, or HEAD (Flask adds it): no attempt to count
        if current_user() is not None:
            return redirect(next_url)
        return render_template("admin/login.html", next=next_url, email="", error=None)
    email = (request.form.get("email") or "").strip().lower()
    password = request.form.get("password") or ""
    wait = login_throttle.retry_after(_client_ip(), email)
    if wait is not None:
        minutes = max(1, round(wait / 60))
        error = (f"Too many failed sign-in attempts. Try again in about {minutes} minute"
                 f"{'s' if minutes != 1 else ''}.")
        return render_template("admin/login.html", next=next_url, email=email, error=error), 429, \
            {"Retry-After": str(wait)}
    user = db.session.execute(select(User).where(User.email == email)).scalar_one_or_none()
    if user is None:
        User(password_hash="").set_password(password)  # same time as a wrong password
    if user is None or not user.check_password(password):
        login_throttle.record_failure(_client_ip(), email)
        return render_template("admin/login.html", next=next_url, email=email,
                               error="Wrong email or password."), 401
    login_throttle.clear(_client_ip(), email)
    _start_session(user)
    logger.info("user %s signed in from %s", user.email, _client_ip())
    return redirect(next_url)


@bp.post("/logout")
def logout():
    user = current_user()
    session.clear()
    if user is not None:
        logger.info("user %s signed out", user.email)
    flash("Signed out.", "info")
    return redirect(url_for("admin.login"))


SETUP_DONE = "The first administrator has been created already: sign in instead."
SETUP_LABELS = {"email": "Email", "password": "Password"}


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """First run: create the admin account. Gone once any user exists."""
    if not _no_users_yet():
        if request.method == "POST":  # a setup page left open while someone else set up
            flash(SETUP_DONE, "error")
            return redirect(url_for("admin.login"))
        abort(404)
    errors: dict[str, str] = {}
    email = ""
    if request.method == "POST":
        email = (request.form.get("email") or "").strip().lower()
        password = request.form.get("password") or ""
        # Every bad field at once, in the same words as everywhere else.
        errors = {field: sentence(SETUP_LABELS[field], message) + "."
                  for field, message in accounts.account_errors(email, password).items()}
        if password != (request.form.get("password_repeat") or ""):
            errors["password_repeat"] = "The two passwords differ."
        if not errors:
            try:
                user = accounts.create_first_admin(email, password)
            except accounts.SetupDone:
                flash(SETUP_DONE, "error")
                return redirect(url_for("admin.login"))
            except accounts.InvalidAccount as exc:  # the email was taken meanwhile
                errors["email"] = str(exc).capitalize() + "."
            else:
                current_app.extensions.setdefault("monitor_signin", {})["users_exist"] = True
                _start_session(user)
                flash(f"Welcome! You are signed in as {user.email}.", "info")
                return redirect(url_for("ui.dashboard"))
    return render_template("admin/setup.html", email=email, errors=errors,
                           min_length=accounts.MIN_PASSWORD_LENGTH), 422 if errors else 200
