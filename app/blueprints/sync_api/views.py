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
import app.blueprints.api.auth  # noqa: F401  (registers how api_auth checks credentials)
from app.blueprints.errors import json_body, json_error
from app.blueprints.sync_api import bp
from app.extensions import api_auth, db
from app.models import MonitoringInstance
from app.services import configuration, failover, readiness
from app.services.endpoints import get_endpoint
from app.services.sync import primary, tokens
from app.services.sync.schemas import (
    EPOCH_HEADER,
    SECRET_HEADER,
    HandoverRequest,
    HeartbeatPayload,
    InstanceRegistration,
    PrimaryAnnouncement,
    VoteRequest,
    validation_errors,
)

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


# Routes between peers, authenticated by the cluster's join secret.
PEER_ROUTES = frozenset({"sync_api.vote", "sync_api.announce", "sync_api.handover", "sync_api.elect"})
# Routes every instance answers, whatever its role.
OPEN_ROUTES = frozenset({"sync_api.health", "sync_api.status", "sync_api.promote", "sync_api.demote",
                         "sync_api.openapi"}) | PROBES


@bp.before_request
def _check_role_and_epoch():
    """Only the primary serves more than the peer routes; stale epochs are refused."""
    if request.endpoint in OPEN_ROUTES | PEER_ROUTES:
        return None
    raw = request.headers.get(EPOCH_HEADER)
    sender_epoch = None
    if raw is not None:
        try:
            sender_epoch = int(raw)
        except ValueError:
            return json_error(400, "validation_error", f"{EPOCH_HEADER} must be an integer",
                              fields={EPOCH_HEADER: "must be an integer"})
    state = configuration.snapshot()
    if sender_epoch is not None and sender_epoch > state.epoch and state.is_primary and _holds_instance_token():
        # A member already follows a newer primary: this one is out of date.
        failover.fence_for_newer_epoch(sender_epoch)
        state = configuration.snapshot()
    if not state.accepts_results:
        return json_error(409, "not_primary", f"this instance is not the primary (it is {state.role})",
                          primaryUrl=None if state.is_fenced else state.primary_url, epoch=state.epoch)
    if sender_epoch is not None and sender_epoch < state.epoch:
        return json_error(409, "stale_epoch", f"epoch {sender_epoch} is older than the cluster's {state.epoch}",
                          epoch=state.epoch, primaryUrl=_own_url())
    return None


def _holds_instance_token() -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and tokens.verify(token.strip()) is not None


def _join_secret_refusal():
    """Refuse a peer request without the join secret (rate-limited per address)."""
    address = request.remote_addr or "unknown"
    if _rate_limited(address):
        return json_error(429, "too_many_attempts",
                          f"too many failed attempts; try again in {REGISTER_WINDOW_SECONDS} s")
    expected = current_app.config["SETTINGS"].sync_shared_secret
    if not expected:
        return json_error(503, "not_clustered", "this instance has no SYNC_SHARED_SECRET set")
    if not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(), expected.encode()):
        _record_failure(address)
        return json_error(401, "unauthorized", f"the cluster join secret ({SECRET_HEADER}) is missing or wrong")
    return None


def _peer_payload(model):
    """(parsed body, None) for a peer route, or (None, error reply)."""
    refusal = _join_secret_refusal()
    if refusal:
        return None, refusal
    data, error = _json_object()
    if error:
        return None, error
    try:
        return model.model_validate(data), None
    except ValidationError as exc:
        errors = validation_errors(exc)
        return None, json_error(400, "validation_error", "; ".join(f"{k}: {v}" for k, v in errors.items()),
                                fields=errors)


def _own_url():
    return primary.public_sync_url(current_app.config["SETTINGS"])


def admin_required(view):
    """Require an administrator's API key or basic credentials (the JSON API's)."""

    @api_auth.login_required
    @wraps(view)
    def wrapper(*args, **kwargs):
        user = api_auth.current_user()
        if user is None or not user.is_admin:
            return json_error(403, "forbidden", "an administrator's credentials are required")
        return view(*args, **kwargs)

    return wrapper


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
    state = configuration.snapshot()
    return jsonify({
        "instanceId": state.instance_id,
        "instanceName": settings.instance_name,
        "location": settings.instance_location,
        "role": state.role,
        "epoch": state.epoch,
        "syncUrl": _own_url(),
        "primaryUrl": _own_url() if state.is_primary else None if state.is_fenced else state.primary_url,
        "primaryId": state.instance_id if state.is_primary else state.primary_id,
        "failoverOrder": failover.own_failover_order(),
        "configVersion": state.config_version,
        "version": __version__,
    })


@bp.post("/register")
def register():
    address = request.remote_addr or "unknown"
    registration, error = _peer_payload(InstanceRegistration)
    if error:
        return error
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
    except primary.NotAcceptingResults as exc:
        return json_error(409, "not_primary", "this instance stopped being the primary", epoch=int(str(exc)))
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


@bp.post("/vote")
def vote():
    """A candidate asks for this instance's vote for an epoch (join secret)."""
    request_, error = _peer_payload(VoteRequest)
    if error:
        return error
    return jsonify(failover.consider_vote(request_.candidate_id, request_.epoch, request_.sync_url))


@bp.post("/announce")
def announce():
    """A new primary names itself; followed once its own status confirms it."""
    announcement, error = _peer_payload(PrimaryAnnouncement)
    if error:
        return error
    followed = failover.heard_announcement(announcement.primary_id, announcement.epoch, announcement.sync_url)
    return jsonify({"followed": followed, "epoch": configuration.epoch()})


@bp.post("/handover")
def handover():
    """The primary's side of a manual promotion (join secret)."""
    handover_request, error = _peer_payload(HandoverRequest)
    if error:
        return error
    try:
        return jsonify(failover.hand_over(handover_request.candidate_id))
    except failover.FailoverRefused as exc:
        return json_error(409, "refused", str(exc), epoch=configuration.epoch())


@bp.post("/elect")
def elect():
    """A candidate told by the primary handing over to it: run now (join secret)."""
    _, error = _peer_payload(HandoverRequest)
    if error:
        return error
    try:
        return jsonify(failover.run_now_after_handover())
    except failover.FailoverRefused as exc:
        return json_error(409, "refused", str(exc), epoch=configuration.epoch())


@bp.post("/promote")
@admin_required
def promote():
    """Make this instance the primary: the current one hands over, then this
    one wins the next epoch's election (an administrator's credentials)."""
    try:
        return jsonify(failover.promote_here())
    except failover.FailoverRefused as exc:
        return json_error(409, "refused", str(exc), epoch=configuration.epoch())


@bp.post("/demote/<instance_id>")
@admin_required
def demote(instance_id):
    """Hand the primary role on to the next live candidate in failover order."""
    if instance_id != configuration.instance_id():
        return json_error(409, "refused", "only the primary itself can be demoted, at its own sync API; "
                                          f"{instance_id} is not this instance", epoch=configuration.epoch())
    try:
        return jsonify(failover.demote_here())
    except failover.FailoverRefused as exc:
        return json_error(409, "refused", str(exc), epoch=configuration.epoch())
