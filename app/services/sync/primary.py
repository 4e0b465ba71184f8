"""The primary's side of sync: registration, heartbeats, configuration,
and the registry of instances."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import func, select, update

from app import __version__
from app.extensions import db
from app.models import (
    Endpoint,
    MonitoringInstance,
    NotificationService,
    ResponseTime,
    utcnow,
)
from app.services import configuration, consensus, failover, maintenance
from app.services.endpoints import configuration_fields
from app.services.results import store_results
from app.services.sync import replication, tokens
from app.services.sync.host_metrics import system_info
from app.services.sync.schemas import HeartbeatPayload, InstanceRegistration, iso

logger = logging.getLogger(__name__)

INSTANCE_ACTIVE = "active"
INSTANCE_INACTIVE = "inactive"
INSTANCE_FAILED = "failed"
# Missed heartbeats before an instance is inactive; seconds of silence
# before it is failed.
INACTIVE_AFTER_MISSED = 3
RENEW_AT_MOST_EVERY = timedelta(minutes=5)
FAILED_AFTER_SECONDS = 600
# The instances page's results per minute average this many minutes.
RATE_WINDOW_MINUTES = 5


class InstanceRemoved(LookupError):
    """The instance was removed after its token was checked."""


class NotAcceptingResults(RuntimeError):
    """This instance stopped being the primary while a heartbeat waited."""


class InstanceIdInUse(PermissionError):
    """A registration names a live instance's id without holding its token."""


def register(registration: InstanceRegistration, *, remote_addr: str | None = None,
             presented_token: str | None = None) -> dict:
    """Record (or refresh) an instance and issue it a fresh token.

    Re-registering revokes the instance's earlier tokens, so each instance
    holds one live token. The join secret alone does not let anyone take
    over a registered instance's id (every dependent knows the secret and
    can list the ids): that takes one of its tokens (expired will do), or
    the instance having gone silent, as a dependent whose tokens no longer
    verify (a new SECRET_KEY on the primary) has.
    """
    now = utcnow()
    instance = db.session.get(MonitoringInstance, registration.instance_id)
    if instance is not None and tokens.owner_of(presented_token) != instance.id and not _silent(instance, now):
        db.session.rollback()
        raise InstanceIdInUse(
            f"instance id {instance.id} belongs to a registered instance that is still sending heartbeats; "
            f"register again with its token (Authorization: Bearer), or after {_silence_limit(instance)} s "
            "without its heartbeats")
    is_new = instance is None
    if instance is None:
        instance = MonitoringInstance(id=registration.instance_id, registered_at=now)
        db.session.add(instance)
        logger.info("instance %s (%s, %s) registered from %s", registration.instance_id,
                    registration.instance_name, registration.location, remote_addr)
    else:
        tokens.revoke_all(instance.id)
        logger.info("instance %s (%s) registered again", instance.id, registration.instance_name)
    instance.name = registration.instance_name
    instance.location = registration.location
    instance.sync_url = registration.sync_url
    if is_new:
        # After the first registration the membership record is the truth:
        # an administrator may have changed the order since.
        instance.failover_order = registration.failover_order
    instance.version = registration.version
    instance.role = "dependent"
    instance.status = INSTANCE_ACTIVE
    instance.last_heartbeat_at = now
    instance.connection_info = {**(instance.connection_info or {}),
                                "heartbeatInterval": registration.heartbeat_interval,
                                "remoteAddr": remote_addr}
    db.session.flush()
    token, expires_at = tokens.issue(instance.id)
    db.session.commit()
    return {
        "instanceId": instance.id,
        "token": token,
        "tokenExpiresAt": expires_at.isoformat(),
        "configVersion": configuration.config_version(),
        "epoch": configuration.epoch(),
        "primaryId": configuration.instance_id(),
        "heartbeatInterval": registration.heartbeat_interval,
        # The newest result held from each member: the registering instance
        # sends what it holds past that (catch-up after a failover).
        "holds": failover.newest_held(),
    }


def heartbeat(instance_id: str, payload: HeartbeatPayload, token: tokens.VerifiedToken) -> dict:
    """Store a heartbeat's results (idempotently), vote on their endpoints,
    and record the instance's state.

    1. Results for endpoints that exist are inserted; a ``result_id`` seen
       before is skipped, so a replayed heartbeat stores nothing twice.
    2. The results are applied to the instance's location status and the
       endpoints are voted on again (``consensus.ingest``); after a silence,
       results it checked before this heartbeat are history, not votes.
    3. Every result stored now or earlier is acknowledged by id; results for
       endpoints that no longer exist are acknowledged as rejected, so they
       leave the sender's outbox.
    4. Instance state is updated in the same transaction.

    The reply's ``transitions`` (consensus changes) are for the caller to
    alert on once committed; they are not sent on the wire.
    """
    now = utcnow()
    previous_heartbeat_at = db.session.execute(
        select(MonitoringInstance.last_heartbeat_at).where(MonitoringInstance.id == instance_id)
    ).scalar_one_or_none()
    # A write first: it takes the instance's row lock (PostgreSQL) or the
    # database's write lock (SQLite) until commit, so a removal waits for
    # this heartbeat, or came first and the instance is gone.
    touched = db.session.execute(update(MonitoringInstance).where(MonitoringInstance.id == instance_id)
                                 .values(last_heartbeat_at=now))
    if touched.rowcount == 0:
        db.session.rollback()
        raise InstanceRemoved(instance_id)
    if not configuration.locked_snapshot().accepts_results:
        # Stepped down or fenced since the request was let in.
        db.session.rollback()
        raise NotAcceptingResults(configuration.epoch())
    instance = db.session.get(MonitoringInstance, instance_id)
    results = payload.results
    known = set()
    if results:
        known = set(db.session.execute(
            select(Endpoint.id).where(Endpoint.id.in_({r.endpoint_id for r in results}))
        ).scalars())
    # Results passed on from other members (catching this primary up) keep
    # who made them; they are history, never votes.
    relayed_from = {r.instance_id for r in results if r.instance_id and r.instance_id != instance_id}
    locations = dict(db.session.execute(
        select(MonitoringInstance.id, MonitoringInstance.location).where(MonitoringInstance.id.in_(relayed_from))
    ).all()) if relayed_from else {}
    rows, rejected = [], []
    for r in results:
        if r.endpoint_id not in known:
            rejected.append({"resultId": r.result_id, "reason": f"no endpoint with id {r.endpoint_id}"})
            continue
        maker = r.instance_id or instance_id
        if maker != instance_id and maker not in locations:
            rejected.append({"resultId": r.result_id, "reason": f"no member with id {maker}"})
            continue
        rows.append({
            "result_id": r.result_id,
            "endpoint_id": r.endpoint_id,
            "instance_id": maker,
            "location": instance.location if maker == instance_id else locations[maker],
            "checked_at": r.checked_at,
            "is_ok": r.is_ok,
            "status": r.status,
            "response_time_ms": r.response_time,
            "failure_reason": r.failure_reason,
            "check_type": r.check_type,
            "check_metadata": r.metadata,
            "synced_at": now,
        })
    store_results(rows)
    connection = payload.connection_status
    consensus.note_heartbeat(
        instance_id, previous_heartbeat_at=previous_heartbeat_at, silence_limit=_silence_limit(instance),
        heartbeat_interval=(instance.connection_info or {}).get("heartbeatInterval"),
        connectivity=None if connection.connectivity_ok is None else {
            "ok": connection.connectivity_ok, "error": connection.connectivity_error,
            # A dependent's clock may be ahead: never later than now.
            "checkedAt": min(connection.connectivity_checked_at or now, now)},
        now=now)
    transitions = consensus.ingest([row for row in rows if row["instance_id"] == instance_id],
                                   instance_id=instance_id, location=instance.location, own=False, now=now,
                                   late_after=_silence_limit(instance))

    instance.status = INSTANCE_ACTIVE
    instance.last_heartbeat_at = now
    instance.system_info = payload.system_info.model_dump(mode="json", by_alias=True, exclude_none=True)
    instance.connection_info = {
        **payload.connection_status.model_dump(mode="json", by_alias=True, exclude_none=True),
        # The primary's own keys, from registration: never the dependent's to set.
        **{key: value for key, value in (instance.connection_info or {}).items()
           if key in ("heartbeatInterval", "remoteAddr")},
        "lastHeartbeatResults": len(results),
        "epoch": payload.epoch,
    }
    instance.config_version = payload.config_version
    reply = {
        "acknowledged": [row["result_id"] for row in rows],
        "rejected": rejected,
        "configVersion": configuration.config_version(),
        "epoch": configuration.epoch(),
    }
    if instance.failover_order > 0:  # a candidate holds the ongoing incidents too
        reply["incidents"] = replication.incidents_snapshot()
    # At most one renewal every RENEW_AT_MOST_EVERY: a dependent that keeps
    # sending its old token (replies lost, or a broken client) must not get a
    # new token row with every heartbeat. The old token stays valid until it
    # expires, in case this reply is lost; once it has, the dependent
    # registers again with it (see register).
    if token.needs_renewal(now) and not tokens.renewed_since(token, now - RENEW_AT_MOST_EVERY):
        new_token, expires_at = tokens.issue(instance_id)
        reply["token"], reply["tokenExpiresAt"] = new_token, expires_at.isoformat()
        logger.info("renewed the token of instance %s", instance_id)
    db.session.commit()
    return {**reply, "transitions": transitions}


def sync_configuration(instance_id: str | None = None) -> dict:
    """The seed's ``SyncConfiguration``: what ``instance_id`` checks, and its version.

    A failover candidate (failover order above 0) gets every endpoint, since
    it may have to become the primary; it checks only those whose
    ``locations`` name it (or name no one). Any other instance gets just the
    endpoints it checks. Only a candidate gets ``replica``: services with
    their secrets, users, API keys, settings and membership
    (``replication.candidate_snapshot``); any other member gets ``members``,
    the membership alone. Every member gets ``maintenanceWindows``.
    """
    endpoints = list(db.session.execute(select(Endpoint).order_by(Endpoint.id)).scalars())
    member = db.session.get(MonitoringInstance, instance_id) if instance_id else None
    if member is not None and member.failover_order <= 0:
        endpoints = [e for e in endpoints if e.location_ids is None or instance_id in e.location_ids]
    config = {
        "configVersion": configuration.config_version(),
        "epoch": configuration.epoch(),
        "generatedAt": utcnow().isoformat(),
        "endpoints": [endpoint_config(e) for e in endpoints],
    }
    if member is not None and member.failover_order > 0:
        config["replica"] = replication.candidate_snapshot()
    elif member is not None:
        # Names, places and the failover order, no secrets: every member's
        # instances page shows the order the primary keeps.
        config["members"] = replication.membership()
    if member is not None:
        config["maintenanceWindows"] = maintenance.replicated()
    return config


def endpoint_config(endpoint: Endpoint) -> dict:
    """An endpoint's configuration fields, without the primary's runtime state."""
    return {"id": endpoint.id, **configuration_fields(endpoint)}


def notification_services() -> list[dict]:
    """Notification services as dependents may see them: no secrets.

    Only the primary alerts, so dependents need names, not credentials.
    """
    services = db.session.execute(select(NotificationService).order_by(NotificationService.id)).scalars()
    return [{"id": s.id, "name": s.name, "kind": s.kind, "isEnabled": s.is_enabled,
             "isDefault": s.is_default} for s in services]


def instance_view(instance: MonitoringInstance) -> dict:
    return {
        "instanceId": instance.id,
        "instanceName": instance.name,
        "location": instance.location,
        "syncUrl": instance.sync_url,
        "role": instance.role,
        "failoverOrder": instance.failover_order,
        "status": instance.status,
        "version": instance.version,
        "lastHeartbeatAt": iso(instance.last_heartbeat_at),
        "registeredAt": iso(instance.registered_at),
        "configVersion": instance.config_version,
        "systemInfo": instance.system_info or {},
        "connectionInfo": instance.connection_info or {},
    }


def list_instances() -> list[MonitoringInstance]:
    return list(db.session.execute(
        select(MonitoringInstance).order_by(MonitoringInstance.failover_order, MonitoringInstance.registered_at)
    ).scalars())


def registry() -> list[dict]:
    """Every instance with what the instances page shows of it, in failover
    order: health, heartbeat lag, results per minute, sync errors, load, and
    what promoting it (or demoting this primary) would do."""
    now = utcnow()
    state = configuration.snapshot()
    current_version = state.config_version
    probes = consensus.probe_states()
    # Candidates first, in the order they would take over; order 0 (never) last.
    instances = sorted(list_instances(), key=lambda i: (i.failover_order <= 0, i.failover_order, i.id))
    rates = results_per_minute([i.id for i in instances], now)
    rows = []
    for instance in instances:
        is_self = instance.id == state.instance_id
        probe = probes.get(instance.id)
        info = instance.connection_info or {}
        age = age_seconds(instance.last_heartbeat_at, now)
        interval = None if is_self else _heartbeat_interval(instance)
        lag = None if age is None or interval is None else max(0, age - interval)
        epoch = state.epoch if is_self else info.get("epoch")
        last_error_at = _parse_time(info.get("lastSyncErrorAt"))
        rows.append({
            "probe_offline": (probe.offline_reason or "probe offline") if probe and probe.offline_since else None,
            "instance": instance,
            "is_self": is_self,
            "role": state.role if is_self else instance.role,
            "epoch": epoch if isinstance(epoch, int) else None,
            "epoch_behind": isinstance(epoch, int) and epoch < state.epoch,
            "heartbeat_age": age,
            "heartbeat_interval": interval,
            "heartbeat_lag": lag,
            "heartbeats_missed": lag // interval if lag and interval else 0,
            "results_per_minute": rates.get(instance.id, 0.0),
            # None: this instance, or a member too old to report them.
            "sync_errors": None if is_self else info.get("syncErrors"),
            "last_sync_error": info.get("lastSyncError") if last_error_at else None,
            "last_sync_error_ago": max(now - last_error_at, timedelta(0)) if last_error_at else None,
            "config_version": current_version if is_self else instance.config_version,
            "config_behind": 0 if is_self else max(0, current_version - instance.config_version),
            "outbox": info.get("outboxSize"),
            "system": instance.system_info or {},
        })
    _plan_handovers(rows, state)
    return rows


def results_per_minute(instance_ids: list[str], now: datetime) -> dict[str, float]:
    """{instance id: results stored here that it checked in the last
    RATE_WINDOW_MINUTES, per minute}, in one query for all of them."""
    if not instance_ids:
        return {}
    since = now - timedelta(minutes=RATE_WINDOW_MINUTES)
    counts = db.session.execute(
        select(ResponseTime.instance_id, func.count(ResponseTime.id))
        .where(ResponseTime.instance_id.in_(instance_ids), ResponseTime.checked_at >= since)
        .group_by(ResponseTime.instance_id)).all()
    return {instance_id: count / RATE_WINDOW_MINUTES for instance_id, count in counts}


def _plan_handovers(rows: list[dict], state: configuration.ClusterState) -> None:
    """Say on each row what a hand-over would do, for the confirmations:
    ``demote`` on this primary's row (to the next active candidate in
    failover order, as ``failover.demote_here`` picks it), ``promote`` on
    each active candidate's; ``handover_refused`` says why a button is not
    offered."""
    own = next((row for row in rows if row["is_self"]), None)
    name = own["instance"].name if own else "this instance"
    candidates = sorted((row for row in rows if not row["is_self"] and row["instance"].failover_order > 0),
                        key=lambda row: (row["instance"].failover_order, row["instance"].id))
    active = [row for row in candidates if row["instance"].status == INSTANCE_ACTIVE]
    for row in rows:
        row["promote"] = row["demote"] = row["handover_refused"] = None
        member = row["instance"]
        if row["is_self"]:
            if active:
                successor = active[0]["instance"].name
                row["demote"] = (f"{name} stops being the primary; {successor} (next in failover order) takes "
                                 f"over at epoch {state.epoch + 1}; alerts will come from {successor}.")
            else:
                row["handover_refused"] = "No active member has a failover order above 0 to take over."
        elif member.failover_order <= 0:
            row["handover_refused"] = "Failover order 0: never becomes the primary."
        elif member.status != INSTANCE_ACTIVE:
            row["handover_refused"] = f"{member.status.capitalize()}: it could not take over now."
        else:
            row["promote"] = (f"{name} stops being the primary; {member.name} takes over at epoch "
                              f"{state.epoch + 1}; alerts will come from {member.name}.")


def _heartbeat_interval(instance: MonitoringInstance) -> int | None:
    interval = (instance.connection_info or {}).get("heartbeatInterval")
    return interval if isinstance(interval, int) and not isinstance(interval, bool) and interval > 0 else None


def _parse_time(value) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def age_seconds(moment: datetime | None, now: datetime) -> int | None:
    """Whole seconds from ``moment`` to ``now`` (never negative), or None."""
    return None if moment is None else max(0, int((now - moment).total_seconds()))


def delete_instance(instance_id: str) -> bool:
    """Forget an instance and revoke its tokens at once (one transaction)."""
    instance = db.session.get(MonitoringInstance, instance_id)
    if instance is None:
        return False
    if instance_id == configuration.instance_id():
        raise ValueError("the primary cannot delete itself")
    tokens.revoke_all(instance_id)
    consensus.forget_instance(instance_id)
    db.session.delete(instance)
    db.session.commit()
    logger.info("instance %s deleted; its tokens are revoked", instance_id)
    return True


def failover_order() -> list[dict]:
    return [
        {"instanceId": i.id, "instanceName": i.name, "location": i.location, "syncUrl": i.sync_url,
         "failoverOrder": i.failover_order, "status": i.status, "role": i.role}
        for i in list_instances()
    ]


def register_self() -> None:
    """Keep the primary's own row in the registry current."""
    settings = current_app.config["SETTINGS"]
    own_id = configuration.instance_id()
    instance = db.session.get(MonitoringInstance, own_id)
    if instance is None:
        instance = MonitoringInstance(id=own_id, registered_at=utcnow())
        db.session.add(instance)
    instance.name = settings.instance_name
    instance.location = settings.instance_location
    instance.sync_url = public_sync_url(settings)
    if instance.failover_order is None:
        instance.failover_order = settings.failover_order  # seeded once; the record is the truth after
    instance.role = "primary"
    instance.status = INSTANCE_ACTIVE
    instance.version = __version__
    instance.last_heartbeat_at = utcnow()
    instance.config_version = configuration.config_version()
    instance.system_info = system_info()
    db.session.commit()


def _silence_limit(instance: MonitoringInstance) -> int:
    """Seconds without heartbeats after which an instance counts as inactive."""
    interval = (instance.connection_info or {}).get("heartbeatInterval")
    if not isinstance(interval, int) or isinstance(interval, bool) or not 1 <= interval <= 3600:
        interval = 10
    return interval * INACTIVE_AFTER_MISSED


def _silent(instance: MonitoringInstance, now: datetime) -> bool:
    return (instance.last_heartbeat_at is None
            or now - instance.last_heartbeat_at > timedelta(seconds=_silence_limit(instance)))


def mark_silent_instances() -> dict:
    """Mark dependents inactive after missed heartbeats, failed after long silence."""
    now = utcnow()
    own_id = configuration.instance_id()
    counts = {INSTANCE_INACTIVE: 0, INSTANCE_FAILED: 0}
    for instance in list_instances():
        if instance.id == own_id or instance.last_heartbeat_at is None:
            continue
        silent = now - instance.last_heartbeat_at
        if silent > timedelta(seconds=FAILED_AFTER_SECONDS):
            new = INSTANCE_FAILED
        elif silent > timedelta(seconds=_silence_limit(instance)):
            new = INSTANCE_INACTIVE
        else:
            continue
        if instance.status != new:
            logger.warning("instance %s (%s) is %s: no heartbeat for %d s", instance.id, instance.name,
                           new, silent.total_seconds())
            instance.status = new
            counts[new] += 1
    db.session.commit()
    return counts


def public_sync_url(settings) -> str:
    """How peers reach this instance: PUBLIC_SYNC_URL, or HOST:SYNC_API_PORT."""
    if settings.public_sync_url:
        return settings.public_sync_url
    host = "127.0.0.1" if settings.host in {"0.0.0.0", "::", ""} else settings.host
    return f"http://{host}:{settings.sync_api_port}"
