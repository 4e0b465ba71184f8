"""Probes and metrics on the web port: ``/healthz``, ``/readyz``, ``/metrics``.

``/healthz`` and ``/readyz`` are open (load balancers and orchestrators ask
them without credentials). ``/metrics`` is open only with
``METRICS_PUBLIC=true``; otherwise it takes an API key or ``METRICS_TOKEN``
as ``Authorization: Bearer``, or a signed-in session. The sign-in hook lets
all three through (``signin.PUBLIC_ENDPOINTS``); ``/metrics`` checks itself.
"""
from __future__ import annotations

import hmac

from flask import current_app, jsonify, request

from app import __version__
from app.blueprints.errors import json_error
from app.blueprints.ui import bp
from app.models.user import API_KEY_PREFIX
from app.services import metrics, readiness


@bp.get("/healthz")
def healthz():
    """Alive: the process answers. Touches neither the database nor Redis."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready: database, Redis, clock lease, a worker. 503 names what is not."""
    state = readiness.readiness()
    return jsonify(state.to_dict()), state.http_status, {"Cache-Control": "no-store"}


def _metrics_allowed() -> bool:
    settings = current_app.config["SETTINGS"]
    if settings.metrics_public:
        return True
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        if settings.metrics_token and hmac.compare_digest(token.encode(), settings.metrics_token.encode()):
            return True
        if token.startswith(API_KEY_PREFIX):
            from app.blueprints.api.auth import verify_token

            return verify_token(token) is not None
        return False
    from app.blueprints.admin.signin import current_user

    return current_user() is not None


@bp.get("/metrics")
def prometheus_metrics():
    """Prometheus text format, read from the database and Redis at each scrape."""
    if not _metrics_allowed():
        response, status = json_error(401, "unauthorized",
                                      "send 'Authorization: Bearer <api key or METRICS_TOKEN>' or sign in")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response, status
    body, content_type = metrics.render(__version__)
    return current_app.response_class(body, mimetype=None, content_type=content_type,
                                      headers={"Cache-Control": "no-store"})
