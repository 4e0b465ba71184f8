"""Replication to failover candidates: everything a primary needs, held
read-only until a candidate is promoted (DESIGN.md, section 8.2).

1. With each configuration pull, a candidate (failover order above 0) gets
   ``replica``: notification services with their secrets, which endpoints
   alert through which service, users, API keys (their hashes), settings
   (status pages among them) and the membership. Members with failover
   order 0 never get any of it. Every member gets the maintenance windows
   (``apply_maintenance_windows``): no secrets, and a promoted candidate
   must keep holding alerts back. ``apply_snapshot`` makes the candidate's
   rows match, keeping the primary's ids, in the pull's one transaction.
2. With each heartbeat reply, a candidate gets ``incidents``: the status
   alerted for every endpoint that is not UP, and the alerts raised but not
   yet sent. They change without a configuration version, so they cannot
   wait for a pull. ``apply_incidents`` records the alerts as *inherited*
   deliveries, which nothing sends; ``adopt_inherited_deliveries`` makes
   them pending once this instance has become the primary.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

from pydantic import ValidationError
from pydantic.alias_generators import to_camel
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.extensions import db
from app.models import (
    DELIVERY_PENDING,
    DELIVERY_SENDING,
    STATUS_DOWN,
    STATUS_PARTIAL,
    STATUS_UP,
    ApiKey,
    Endpoint,
    MonitoringInstance,
    NotificationDelivery,
    NotificationService,
    Setting,
    User,
    endpoint_notifications,
    utcnow,
)
from app.models.notification import DELIVERY_INHERITED
from app.services.sync.schemas import (
    MAX_OPEN_DELIVERIES,
    Incidents,
    MaintenanceWindows,
    Membership,
    Replica,
    iso,
    validation_errors,
)

logger = logging.getLogger(__name__)

_CHUNK = 500


class InvalidReplica(ValueError):
    """A replica or incidents payload that is not what the sync API promises;
    ``errors`` maps each bad field (camelCase path) to its message."""

    def __init__(self, what: str, errors: dict[str, str]):
        super().__init__(f"malformed {what} from the primary: "
                         + "; ".join(f"{field}: {message}" for field, message in list(errors.items())[:10]))
        self.errors = errors


# --- on the primary -------------------------------------------------------------


def candidate_snapshot() -> dict:
    """What a failover candidate needs besides the endpoints, with secrets."""
    link = endpoint_notifications.c
    return {
        "notificationServices": [
            {"id": s.id, "name": s.name, "kind": s.kind, "config": s.config or {}, "isEnabled": s.is_enabled,
             "isDefault": s.is_default, "createdAt": iso(s.created_at)}
            for s in db.session.execute(select(NotificationService).order_by(NotificationService.id)).scalars()
        ],
        "endpointNotifications": [
            {"endpointId": endpoint_id, "notificationServiceId": service_id}
            for endpoint_id, service_id in db.session.execute(
                select(link.endpoint_id, link.notification_service_id)
                .order_by(link.endpoint_id, link.notification_service_id))
        ],
        "users": [
            {"id": u.id, "email": u.email, "passwordHash": u.password_hash, "isAdmin": u.is_admin,
             "createdAt": iso(u.created_at)}
            for u in db.session.execute(select(User).order_by(User.id)).scalars()
        ],
        "apiKeys": [
            {"id": k.id, "userId": k.user_id, "name": k.name, "prefix": k.prefix, "keyHash": k.key_hash,
             "createdAt": iso(k.created_at), "revokedAt": iso(k.revoked_at)}
            for k in db.session.execute(select(ApiKey).order_by(ApiKey.id)).scalars()
        ],
        "settings": [
            {"key": s.key, "value": s.value}
            for s in db.session.execute(select(Setting).order_by(Setting.key)).scalars()
        ],
        "instances": membership(),
    }


def membership() -> list[dict]:
    """The cluster's members and their failover order, without secrets: every
    member holds it (a candidate in its replica, any other member beside its
    endpoints), so every instances page shows the order the primary keeps."""
    return [
        {"instanceId": i.id, "instanceName": i.name, "location": i.location, "syncUrl": i.sync_url,
         "role": i.role, "failoverOrder": i.failover_order, "status": i.status, "version": i.version,
         "registeredAt": iso(i.registered_at)}
        for i in db.session.execute(select(MonitoringInstance).order_by(MonitoringInstance.id)).scalars()
    ]


def incidents_snapshot() -> dict:
    """Ongoing incidents for a candidate's heartbeat reply: the status
    alerted for endpoints DOWN or PARTIAL, and the newest alerts not yet sent."""
    alerted = db.session.execute(
        select(Endpoint.id, Endpoint.alerted_status)
        .where(Endpoint.alerted_status.in_((STATUS_DOWN, STATUS_PARTIAL)))
    ).all()
    deliveries = db.session.execute(
        select(NotificationDelivery)
        .where(NotificationDelivery.status.in_((DELIVERY_PENDING, DELIVERY_SENDING)))
        .order_by(NotificationDelivery.id.desc()).limit(MAX_OPEN_DELIVERIES)
    ).scalars()
    return {
        "alerted": {str(endpoint_id): status for endpoint_id, status in alerted},
        "openDeliveries": [
            {"dedupeKey": d.dedupe_key, "notificationServiceId": d.notification_service_id,
             "endpointId": d.endpoint_id, "event": d.event, "payload": d.payload or {},
             "createdAt": iso(d.created_at)}
            for d in deliveries
        ],
    }


# --- on a candidate ---------------------------------------------------------------


def apply_snapshot(replica: dict) -> dict:
    """Make this candidate's services, links, users, API keys, settings and
    membership match the primary's; the caller commits (the configuration
    pull, whose endpoints are applied and flushed first).

    1. The whole payload is validated before anything is written; a bad one
       raises ``InvalidReplica`` naming the field, and the caller's rollback
       leaves everything as it was.
    2. Rows keep the primary's ids; rows the primary no longer has are
       deleted, changed ones updated, new ones inserted. This instance's own
       users (the admin made from the environment) give way to the primary's.
    3. A link to an endpoint this instance skipped as invalid is left out.
    """
    spec = _parse(Replica, replica, "replica")
    _check_references(spec)
    counts = {}
    # Keys first and users next: a user replaced (its email moved to another
    # id) takes its keys with it, and the keys are put back after.
    gone_keys = set(_rows(ApiKey.__table__, ("id",))) - {k.id for k in spec.api_keys}
    _delete(ApiKey.__table__, "id", gone_keys)
    counts["users"] = _mirror(User.__table__, "id", [
        {"id": u.id, "email": u.email, "password_hash": u.password_hash, "is_admin": u.is_admin,
         "created_at": u.created_at} for u in spec.users
    ], replace_when=lambda local, remote: local["email"] != remote["email"])
    counts["apiKeys"] = _mirror(ApiKey.__table__, "id", [
        {"id": k.id, "user_id": k.user_id, "name": k.name, "prefix": k.prefix, "key_hash": k.key_hash,
         "created_at": k.created_at, "revoked_at": k.revoked_at} for k in spec.api_keys
    ])
    counts["notificationServices"] = _mirror(NotificationService.__table__, "id", [
        {"id": s.id, "name": s.name, "kind": s.kind, "config": s.config, "is_enabled": s.is_enabled,
         "is_default": s.is_default, "created_at": s.created_at} for s in spec.notification_services
    ])
    counts["endpointNotifications"] = _mirror_links({(link.endpoint_id, link.notification_service_id)
                                                     for link in spec.endpoint_notifications})
    counts["settings"] = _mirror(Setting.__table__, "key", [{"key": s.key, "value": s.value} for s in spec.settings])
    counts["instances"] = _mirror_members(spec.instances)
    logger.info("replica applied: %s", ", ".join(f"{name} {added}+ {changed}~ {removed}-"
                                                 for name, (added, changed, removed) in counts.items()))
    return counts


def apply_membership(members: list) -> tuple[int, int, int]:
    """Make this member's copy of the membership match the primary's (a
    member that is no candidate gets it without the replica); the caller
    commits. A malformed list raises ``InvalidReplica`` and changes nothing."""
    spec = _parse(Membership, {"instances": members}, "members")
    return _mirror_members(spec.instances)


def _mirror_members(instances: list) -> tuple[int, int, int]:
    # The registry's own columns (heartbeats, health) stay this instance's.
    return _mirror(MonitoringInstance.__table__, "id", [
        {"id": i.instance_id, "name": i.instance_name, "location": i.location, "sync_url": i.sync_url,
         "role": i.role, "failover_order": i.failover_order, "status": i.status, "version": i.version,
         "registered_at": i.registered_at} for i in instances
    ])


def apply_maintenance_windows(windows: list) -> tuple[int, int, int]:
    """Make this member's maintenance windows match the primary's (ids kept);
    the caller commits. A malformed list raises ``InvalidReplica`` and
    changes nothing."""
    from app.models import MaintenanceWindow

    spec = _parse(MaintenanceWindows, {"maintenanceWindows": windows}, "maintenanceWindows")
    ids = [w.id for w in spec.maintenance_windows]
    if len(set(ids)) != len(ids):
        raise InvalidReplica("maintenanceWindows", {"maintenanceWindows": "lists a window id twice"})
    now = utcnow()
    return _mirror(MaintenanceWindow.__table__, "id", [
        {"id": w.id, "title": w.title, "description": w.description, "starts_at": w.starts_at,
         "ends_at": w.ends_at, "cron_expression": w.cron_expression, "time_zone": w.time_zone,
         "duration_minutes": w.duration_minutes, "endpoint_ids": w.endpoint_ids, "group_names": w.groups,
         "is_active": w.is_active, "created_at": w.created_at, "updated_at": now}
        for w in spec.maintenance_windows
    ], replace_when=None, ignore=("updated_at",))


def apply_incidents(incidents: dict) -> dict:
    """Record the primary's ongoing incidents here; the caller commits.

    1. Listed endpoints get the status the primary alerted; others alerted
       DOWN or PARTIAL here are UP again (the primary sent their recovery).
    2. Open deliveries are upserted by dedupe key as *inherited*: never sent
       from here, since ``alerts.deliver`` sends only pending ones. Their
       status change ids are the primary's, so none is kept. Inherited rows
       no longer listed were sent by the primary and are deleted.
    A malformed payload changes nothing and is logged, and the round goes
    on: incidents are advisory, and refusing the reply would keep the
    results it acknowledged in the outbox.
    """
    try:
        spec = _parse(Incidents, incidents, "incidents")
    except InvalidReplica:
        return {}
    table = Endpoint.__table__
    local = dict(db.session.execute(select(table.c.id, table.c.alerted_status)).all())
    wanted = {endpoint_id: status for endpoint_id, status in spec.alerted.items() if endpoint_id in local}
    recovered = [endpoint_id for endpoint_id, status in local.items()
                 if status in (STATUS_DOWN, STATUS_PARTIAL) and endpoint_id not in wanted]
    changes = sorted([(endpoint_id, status) for endpoint_id, status in wanted.items() if local[endpoint_id] != status]
                     + [(endpoint_id, STATUS_UP) for endpoint_id in recovered])
    if changes:
        # In id order, as the consensus locks endpoints: no deadlock with a check job.
        db.session.execute(update(table).where(table.c.id == bindparam("_id"))
                           .values(alerted_status=bindparam("_status")),
                           [{"_id": endpoint_id, "_status": status} for endpoint_id, status in changes])

    services = set(db.session.execute(select(NotificationService.id)).scalars())
    rows = []
    for d in spec.open_deliveries:
        if d.notification_service_id not in services or (d.endpoint_id is not None and d.endpoint_id not in local):
            # Raised for a service or endpoint the next configuration pull brings.
            logger.debug("open delivery %s names service %s or endpoint %s not here yet; next heartbeat",
                         d.dedupe_key, d.notification_service_id, d.endpoint_id)
            continue
        rows.append({"dedupe_key": d.dedupe_key, "notification_service_id": d.notification_service_id,
                     "endpoint_id": d.endpoint_id, "status_change_id": None, "event": d.event,
                     "status": DELIVERY_INHERITED, "payload": d.payload, "attempts": 0,
                     "next_attempt_at": None, "created_at": d.created_at})
    deliveries = NotificationDelivery.__table__
    if rows:
        make = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = make(deliveries)
        # Only an inherited row follows the primary's: one this instance
        # has adopted (or raised itself under the same key) is its own.
        stmt = stmt.on_conflict_do_update(
            index_elements=["dedupe_key"],
            set_={name: stmt.excluded[name] for name in ("notification_service_id", "endpoint_id", "event",
                                                         "payload", "created_at")},
            where=deliveries.c.status == DELIVERY_INHERITED)
        db.session.execute(stmt, rows)
    listed = [d.dedupe_key for d in spec.open_deliveries]
    finished = db.session.execute(
        delete(deliveries).where(deliveries.c.status == DELIVERY_INHERITED,
                                 deliveries.c.dedupe_key.not_in(listed or [""]))
    ).rowcount
    if recovered or finished:
        logger.info("incidents from the primary: %d endpoints alerted, %d recovered; %d open alerts "
                    "inherited, %d sent by the primary meanwhile", len(wanted), len(recovered), len(rows), finished)
    return {"alerted": len(wanted), "recovered": len(recovered), "inherited": len(rows), "finished": finished}


def adopt_inherited_deliveries() -> int:
    """Make the alerts inherited from the old primary this instance's to
    send, due now; returns how many. Called once, on promotion. Commits."""
    table = NotificationDelivery.__table__
    adopted = db.session.execute(
        update(table).where(table.c.status == DELIVERY_INHERITED)
        .values(status=DELIVERY_PENDING, next_attempt_at=utcnow(), claimed_at=None)
    ).rowcount
    db.session.commit()
    if adopted:
        logger.warning("adopted %d alerts the old primary had raised but not sent", adopted)
    return adopted


# --- helpers ---------------------------------------------------------------------


def _parse(model, data, what: str):
    """``data`` validated as ``model``, or ``InvalidReplica`` naming each bad field (logged)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = {f"{what}.{field}": message for field, message in validation_errors(exc).items()}
    logger.error("%s from the primary is malformed; nothing of it is applied: %s", what,
                 "; ".join(f"{field}: {message}" for field, message in list(errors.items())[:10]))
    raise InvalidReplica(what, errors)


def _check_references(spec: Replica) -> None:
    """Ids unique within each list, and every key and link naming a row of the replica."""
    errors: dict[str, str] = {}
    for name, rows, key in (("notificationServices", spec.notification_services, "id"),
                            ("users", spec.users, "id"), ("users", spec.users, "email"),
                            ("apiKeys", spec.api_keys, "id"), ("settings", spec.settings, "key"),
                            ("instances", spec.instances, "instance_id")):
        seen = set()
        for index, row in enumerate(rows):
            value = getattr(row, key)
            if value in seen:
                errors[f"replica.{name}.{index}.{to_camel(key)}"] = f"{value!r} is listed twice"
            seen.add(value)
    users = {u.id for u in spec.users}
    for index, k in enumerate(spec.api_keys):
        if k.user_id not in users:
            errors[f"replica.apiKeys.{index}.userId"] = f"no user with id {k.user_id} in the replica"
    services = {s.id for s in spec.notification_services}
    for index, link in enumerate(spec.endpoint_notifications):
        if link.notification_service_id not in services:
            errors[f"replica.endpointNotifications.{index}.notificationServiceId"] = (
                f"no notification service with id {link.notification_service_id} in the replica")
    if errors:
        logger.error("replica from the primary is malformed; nothing of it is applied: %s",
                     "; ".join(f"{field}: {message}" for field, message in list(errors.items())[:10]))
        raise InvalidReplica("replica", errors)


def _chunks(values: Iterable) -> Iterable[list]:
    values = sorted(values)
    for start in range(0, len(values), _CHUNK):
        yield values[start:start + _CHUNK]


def _rows(table, columns: Iterable[str]) -> dict:
    """Rows of ``table`` by their first column, as dicts of ``columns``."""
    columns = list(columns)
    return {row[columns[0]]: dict(row) for row in
            db.session.execute(select(*(table.c[name] for name in columns))).mappings()}


def _delete(table, key: str, values: Iterable) -> int:
    deleted = 0
    for chunk in _chunks(values):
        deleted += db.session.execute(delete(table).where(table.c[key].in_(chunk))).rowcount
    return deleted


def _mirror(table, key: str, remote_rows: list[dict], *, replace_when=None,
            ignore: Iterable[str] = ()) -> tuple[int, int, int]:
    """Make ``table`` hold exactly ``remote_rows`` (by ``key``, in the columns
    they name); returns (added, changed, removed).

    ``replace_when(local, remote)``: delete the local row and insert the
    remote one instead of updating (a unique column that moves between rows).
    ``ignore``: columns written but not compared (a local ``updated_at``).
    """
    columns = [key] + [name for name in remote_rows[0] if name != key] if remote_rows else [key]
    local = _rows(table, columns)
    remote = {row[key]: row for row in remote_rows}
    replaced = {k for k in remote if k in local and replace_when is not None and replace_when(local[k], remote[k])}
    removed = _delete(table, key, (set(local) - set(remote)) | replaced)
    ignore = set(ignore)

    def differs(local_row: dict, remote_row: dict) -> bool:
        return any(value != local_row.get(name) for name, value in remote_row.items() if name not in ignore)

    changed = [{"_key": k, **{c: v for c, v in row.items() if c != key}}
               for k, row in remote.items() if k in local and k not in replaced and differs(local[k], row)]
    if changed:
        db.session.execute(update(table).where(table.c[key] == bindparam("_key"))
                           .values({c: bindparam(c) for c in changed[0] if c != "_key"}), changed)
    added = [row for k, row in remote.items() if k not in local or k in replaced]
    if added:
        db.session.execute(table.insert(), added)
    return len(added), len(changed), removed - len(replaced)


def _mirror_links(wanted: set[tuple[int, int]]) -> tuple[int, int, int]:
    link = endpoint_notifications.c
    endpoints = set(db.session.execute(select(Endpoint.id)).scalars())
    skipped = {pair for pair in wanted if pair[0] not in endpoints}
    if skipped:
        logger.warning("links of endpoints %s are left out: those endpoints are not here (invalid here, skipped)",
                       ", ".join(str(e) for e in sorted({e for e, _ in skipped})))
    wanted -= skipped
    local = {tuple(row) for row in db.session.execute(select(link.endpoint_id, link.notification_service_id))}
    gone = local - wanted
    for endpoint_id, service_id in gone:
        db.session.execute(delete(endpoint_notifications).where(
            link.endpoint_id == endpoint_id, link.notification_service_id == service_id))
    new = wanted - local
    if new:
        db.session.execute(endpoint_notifications.insert(),
                           [{"endpoint_id": e, "notification_service_id": s} for e, s in sorted(new)])
    return len(new), 0, len(gone)
