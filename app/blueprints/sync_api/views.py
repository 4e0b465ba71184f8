"""Sync API routes. Health and status are open peer routes; registration
takes the join secret; everything else an instance token. Views parse,
call ``app.services.sync``, answer."""
from __future__ import annotations

import hmac
import threading
import time
from collections import defaultdict, deque
from functools import wraps

from flask import current_app, g, jsonify, request
from pydantic import ValidationError

from app import __version__
from app.blueprints.errors import json_body, json_error
from app.blueprints.sync_api import bp
from app.config import ROLE_PRIMARY
from app.extensions import db
from app.models import MonitoringInstance
from app.services import configuration, readiness
from app.services.endpoints import get_endpoint
from app.services.sync import primary, tokens
from app.services.sync.dependent import EPOCH_HEADER, SECRET_HEADER
from app.services.sync.schemas import HeartbeatPayload, InstanceRegistration, validation_errors

# Failed join-secret attempts allowed per client address per window.
REGISTER_FAILURES_ALLOWED = 10
REGISTER_WINDOW_SECONDS = 60
_failures: dict[str, deque] = defaultdict(deque)
_failures_lock = threading.Lock()
# Load-balancer probes: bounded by their own timeouts, no role or epoch.
PROBES = frozenset({"sync_api.healthz", "sync_api.readyz"})


@bp.after_request
def _stamp_epoch(response):
    """Every reply carries this instance's epoch, so peers know whom to trust."""
    if request.endpoint in PROBES:
        return response  # probes answer without the database's pool (a dead server would hang them)
    try:
        response.headers[EPOCH_HEADER] = str(configuration.epoch())
    except Exception:  # the database is away: the reply still goes out
        pass
    return response


@bp.before_request
def _check_role_and_epoch():
    """Only the primary serves more than the peer routes; stale epochs are refused."""
    if request.endpoint in {"sync_api.health", "sync_api.status"} | PROBES:
        return None
    if configuration.role() != ROLE_PRIMARY:
        return json_error(409, "not_primary", "this instance is not the primary",
                          primaryUrl=configuration.primary_url(), epoch=configuration.epoch())
    raw = request.headers.get(EPOCH_HEADER)
    if raw is not None:
        try:
            sender_epoch = int(raw)
        except ValueError:
            return json_error(400, "validation_error", f"{EPOCH_HEADER} must be an integer",
                              fields={EPOCH_HEADER: "must be an integer"})
        if sender_epoch < configuration.epoch():
            return json_error(409, "stale_epoch",
                              f"epoch {sender_epoch} is older than the cluster's {configuration.epoch()}",
                              epoch=configuration.epoch(), primaryUrl=_own_url())
    return None


def _own_url():
    return primary.public_sync_url(current_app.config["SETTINGS"])


def instance_token_required(view):
    """Require ``Authorization: Bearer <instance token>``; sets ``g.token``."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        verified = tokens.verify(token.strip()) if scheme.lower() == "bearer" else None
        if verified is None:
            return json_error(401, "unauthorized", "a valid instance token is required "
                                                   "(Authorization: Bearer <token>)")
        g.token = verified
        return view(*args, **kwargs)

    return wrapper


def _json_object():
    return json_body()


def _rate_limited(address: str) -> bool:
    now = time.monotonic()
    with _failures_lock:
        attempts = _failures[address]
        while attempts and attempts[0] < now - REGISTER_WINDOW_SECONDS:
            attempts.popleft()
        return len(attempts) >= REGISTER_FAILURES_ALLOWED


def _record_failure(address: str) -> None:
    with _failures_lock:
        _failures[address].append(time.monotonic())


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


@bp.get("/healthz")
def healthz():
    """Alive, for a load balancer in front of the sync port: no database, no Redis."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready, as the web port's /readyz: database, Redis, clock lease, a worker."""
    state = readiness.readiness()
    return jsonify(state.to_dict()), state.http_status, {"Cache-Control": "no-store"}


@bp.get("/status")
def status():
    """Who this instance is and whom it follows, for peers finding the primary."""
    settings = current_app.config["SETTINGS"]
    is_primary = configuration.role() == ROLE_PRIMARY
    return jsonify({
        "instanceId": configuration.instance_id(),
        "instanceName": settings.instance_name,
        "location": settings.instance_location,
        "role": configuration.role(),
        "epoch": configuration.epoch(),
        "syncUrl": _own_url(),
        "primaryUrl": _own_url() if is_primary else configuration.primary_url(),
        "failoverOrder": settings.failover_order,
        "configVersion": configuration.config_version(),
        "version": __version__,
    })


@bp.post("/register")
def register():
    address = request.remote_addr or "unknown"
    if _rate_limited(address):
        return json_error(429, "too_many_attempts",
                          f"too many failed registrations; try again in {REGISTER_WINDOW_SECONDS} s")
    expected = current_app.config["SETTINGS"].sync_shared_secret
    given = request.headers.get(SECRET_HEADER, "")
    if not expected:
        return json_error(503, "registration_disabled", "this primary has no SYNC_SHARED_SECRET set")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        _record_failure(address)
        return json_error(401, "unauthorized", f"the cluster join secret ({SECRET_HEADER}) is missing or wrong")
    data, error = _json_object()
    if error:
        return error
    try:
        registration = InstanceRegistration.model_validate(data)
    except ValidationError as exc:
        errors = validation_errors(exc)
        return json_error(400, "validation_error", "; ".join(f"{k}: {v}" for k, v in errors.items()),
                          fields=errors)
    if registration.instance_id == configuration.instance_id():
        return json_error(409, "conflict", "that instance id is the primary's own")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    try:
        reply = primary.register(registration, remote_addr=address,
                                 presented_token=token.strip() if scheme.lower() == "bearer" else None)
    except primary.InstanceIdInUse as exc:
        return json_error(409, "instance_id_in_use", str(exc), fields={"instanceId": "in use by a live instance"})
    return jsonify(reply), 201


@bp.put("/heartbeat")
@instance_token_required
def heartbeat():
    data, error = _json_object()
    if error:
        return error
    try:
        payload = HeartbeatPayload.model_validate(data)
    except ValidationError as exc:
        errors = validation_errors(exc)
        return json_error(400, "validation_error", "; ".join(f"{k}: {v}" for k, v in list(errors.items())[:10]),
                          fields=errors)
    if payload.instance_id != g.token.instance_id:
        return json_error(403, "forbidden", "instanceId does not match the token's instance",
                          fields={"instanceId": "does not match the token"})
    try:
        reply = primary.heartbeat(g.token.instance_id, payload, g.token)
    except primary.InstanceRemoved:
        return json_error(401, "unauthorized", "this instance has been removed; register again")
    # Consensus changes alert now; the alert sweep raises whatever this misses.
    from workers.jobs.alerts import alert_transitions

    alert_transitions(reply.pop("transitions"))
    return jsonify(reply)


@bp.get("/instances")
@instance_token_required
def instances():
    return jsonify({"instances": [primary.instance_view(i) for i in primary.list_instances()],
                    "epoch": configuration.epoch()})


@bp.delete("/instances/<instance_id>")
@instance_token_required
def delete_instance(instance_id):
    # An instance token may remove only its own instance (leaving the
    # cluster): one dependent must not be able to remove another.
    if instance_id != g.token.instance_id:
        return json_error(403, "forbidden", "an instance may delete only itself")
    if db.session.get(MonitoringInstance, instance_id) is None:
        return json_error(404, "not_found", f"no instance with id {instance_id}")
    primary.delete_instance(instance_id)
    return "", 204


@bp.get("/endpoints")
@instance_token_required
def endpoints():
    version = configuration.config_version()
    etag = f'"{version}"'
    if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
        response = current_app.response_class(status=304)
        response.headers["ETag"] = etag
        return response
    response = jsonify(primary.sync_configuration(g.token.instance_id))
    response.headers["ETag"] = etag
    return response


@bp.get("/endpoints/<int:endpoint_id>")
@instance_token_required
def endpoint(endpoint_id):
    found = get_endpoint(endpoint_id)
    if found is None:
        return json_error(404, "not_found", f"no endpoint with id {endpoint_id}")
    return jsonify(primary.endpoint_config(found))


@bp.get("/notification-services")
@instance_token_required
def notification_services():
    return jsonify({"notificationServices": primary.notification_services(),
                    "configVersion": configuration.config_version()})


@bp.get("/failover-order")
@instance_token_required
def failover_order():
    return jsonify({"failoverOrder": primary.failover_order(), "epoch": configuration.epoch()})


@bp.post("/promote")
@instance_token_required
def promote():
    return json_error(501, "not_implemented",
                      "manual promotion arrives with automatic failover; this primary stays primary")


@bp.post("/demote/<instance_id>")
@instance_token_required
def demote(instance_id):
    return json_error(501, "not_implemented",
                      "manual demotion arrives with automatic failover; nothing was changed")
