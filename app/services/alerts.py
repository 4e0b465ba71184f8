"""Alerts: status changes become deliveries; deliveries are sent with retries.

1. ``consensus`` stores each change of an endpoint's consensus as a
   ``status_changes`` row, with the alert it raises (``alert_event``:
   down, up, partial, or none) decided under the endpoint's row lock. The
   check job (for results made here) or the heartbeat (for a dependent's)
   then calls ``raise_alerts`` for the endpoints that changed: each change
   with an alert gets one ``notification_deliveries`` row per enabled
   service of its endpoint. The dedupe key ``"<instance id>:<status change
   id>:<service id>"`` is unique, so a replay, a retried job or the sweep
   below never creates one twice. Only a standalone or the primary raises alerts
   (``configuration.may_alert``): once per cluster, never per location.
2. A worker runs ``deliver`` for each row, on the notify queue, never inside
   a check job. It claims the row with a conditional UPDATE (pending ->
   sending) and acts only if that changed one row, sends with no database
   transaction open, then records the outcome, again conditioned on its own
   claim: sent; pending again with ``next_attempt_at`` after an exponential
   backoff when retrying can help; failed after ``MAX_ATTEMPTS`` or at once
   when it cannot.
3. Every ~15 s the clock enqueues ``workers.jobs.alerts.sweep``: it frees
   claims left by a worker that died mid-send, raises alerts missed because
   a job died between storing results and raising them, raises reminders for
   endpoints still DOWN, raises certificate expiry alerts, and enqueues the
   deliveries that are due. Changes inside a maintenance window alert
   nobody; the alert they held back is raised when it ends, if still owed
   (``maintenance.release_held_alerts``).

Delivery is at least once: a worker killed after the service accepted a
message but before it recorded so sends it again once its claim goes stale.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.checks import public_target
from app.extensions import db
from app.models import (
    DELIVERY_FAILED,
    DELIVERY_PENDING,
    DELIVERY_SENDING,
    DELIVERY_SENT,
    STATUS_DOWN,
    Endpoint,
    NotificationDelivery,
    NotificationService,
    StatusChange,
    endpoint_notifications,
    utcnow,
)
from app.notifiers import (
    EVENT_CERT_EXPIRING,
    EVENT_CERT_RENEWED,
    EVENT_CLUSTER,
    EVENT_DOWN,
    EVENT_PARTIAL,
    EVENT_REMINDER,
    EVENT_UP,
    AlertMessage,
    DeliveryError,
    notifier_for,
)
from app.services import maintenance

logger = logging.getLogger(__name__)

# Tries per delivery, and the waits between them: 30 s, 1 min, 2 min, ...
# capped at 30 min, so the last try is about an hour after the first.
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 30.0
BACKOFF_CAP_SECONDS = 1800.0
# How far back the sweep looks for status changes that were never alerted.
ALERT_WINDOW = timedelta(minutes=15)
# A claim older than this belongs to a worker that died while sending.
STALE_CLAIM = timedelta(minutes=10)
# New deliveries are enqueued when raised; the sweep leaves them this long.
NEW_DELIVERY_GRACE = timedelta(seconds=30)
_CHUNK = 500


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed try."""
    return timedelta(seconds=min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_CAP_SECONDS))


def instance_fields() -> dict:
    """Which instance and location an alert comes from."""
    from app.services import configuration

    settings = current_app.config["SETTINGS"]
    return {"instance_id": configuration.instance_id(), "instance_name": settings.instance_name,
            "location": settings.instance_location}


def _alerts_here() -> bool:
    # Dependents report to the primary; the primary (or a standalone) alerts.
    from app.services import configuration

    return configuration.may_alert()


# --- raising alerts -----------------------------------------------------------


def raise_alerts(endpoint_ids: Iterable[int] | None = None, *, now: datetime | None = None,
                 window: timedelta = ALERT_WINDOW) -> list[int]:
    """Create the missing deliveries for recent alertable status changes.

    Looks at changes of ``endpoint_ids`` (every endpoint when ``None``) in the
    last ``window``. Returns the ids of their deliveries that are pending
    and due, to enqueue. Commits.
    """
    from app.services import configuration

    now = now or utcnow()
    since = now - window
    # A new primary alerts for what changes from its promotion on; what it
    # saw as a dependent was the old primary's to alert.
    promoted_at = configuration.alerting_since()
    if promoted_at is not None and promoted_at > since:
        since = promoted_at
    query = (
        select(StatusChange)
        .where(StatusChange.changed_at >= since, StatusChange.alert_event.is_not(None))
        .order_by(StatusChange.id)
    )
    if endpoint_ids is not None:
        endpoint_ids = set(endpoint_ids)
        if not endpoint_ids:
            return []
        query = query.where(StatusChange.endpoint_id.in_(endpoint_ids))
    changes = list(db.session.execute(query).scalars())
    if not changes or not _alerts_here():
        db.session.commit()
        return []
    services = _enabled_services({change.endpoint_id for change in changes})
    # Change ids are this instance's own: its id keeps them apart from the
    # keys of alerts inherited from an earlier primary.
    own_id = configuration.instance_id()
    wanted = {f"{own_id}:{change.id}:{service_id}": (change, service_id)
              for change in changes for service_id in services.get(change.endpoint_id, ())}
    missing = set(wanted) - _existing_keys(wanted)
    if missing:
        # Deliveries made before keys carried the instance id (an upgrade
        # during an incident) are found by their change.
        made = set(db.session.execute(
            select(NotificationDelivery.status_change_id, NotificationDelivery.notification_service_id)
            .where(NotificationDelivery.status_change_id.in_({wanted[key][0].id for key in missing}))).all())
        missing = {key for key in missing if (wanted[key][0].id, wanted[key][1]) not in made}
    if missing:
        endpoints = _endpoints({wanted[key][0].endpoint_id for key in missing})
        identity = instance_fields()
        messages: dict[int, AlertMessage] = {}
        rows = []
        for key in sorted(missing):
            change, service_id = wanted[key]
            endpoint = endpoints.get(change.endpoint_id)
            if endpoint is None:
                continue
            if change.id not in messages:
                messages[change.id] = _change_message(change, endpoint, identity)
            rows.append(_row(key, messages[change.id], service_id, change.id, now))
        _insert(rows)
    db.session.commit()
    return _due_ids(wanted, now)


def raise_reminders(*, now: datetime | None = None) -> list[int]:
    """Create reminder deliveries for endpoints still DOWN.

    An endpoint with ``reminder_interval_minutes`` gets its n-th reminder
    once n intervals have passed since it went DOWN; the dedupe key holds n,
    so each interval reminds once, and an absent clock does not cause a
    burst of reminders later. Returns the ids of their deliveries that are
    pending and due, to enqueue. Commits.
    """
    now = now or utcnow()
    endpoints = {
        row.id: row for row in db.session.execute(
            select(Endpoint.id, Endpoint.name, Endpoint.target, Endpoint.check_type,
                   Endpoint.reminder_interval_minutes, Endpoint.last_failure_reason)
            .where(Endpoint.status == STATUS_DOWN, Endpoint.is_paused.is_(False),
                   Endpoint.reminder_interval_minutes.is_not(None),
                   Endpoint.reminder_interval_minutes > 0)
        )
    }
    if not endpoints or not _alerts_here():
        db.session.commit()
        return []
    # Reminders wait out a maintenance window; the next interval's comes after it.
    for endpoint_id in maintenance.endpoints_in_maintenance(_with_groups(endpoints), now):
        del endpoints[endpoint_id]
    if not endpoints:
        db.session.commit()
        return []
    latest_down = (
        select(func.max(StatusChange.id))
        .where(StatusChange.endpoint_id.in_(endpoints), StatusChange.alert_event == EVENT_DOWN)
        .group_by(StatusChange.endpoint_id)
    )
    changes = list(db.session.execute(select(StatusChange).where(StatusChange.id.in_(latest_down))).scalars())
    services = _enabled_services(set(endpoints))
    from app.services import configuration

    own_id = configuration.instance_id()  # change ids are local: see raise_alerts
    wanted = {}
    for change in changes:
        endpoint = endpoints[change.endpoint_id]
        down_for = (now - change.changed_at).total_seconds()
        n = int(down_for // (endpoint.reminder_interval_minutes * 60))
        if n < 1:
            continue
        for service_id in services.get(change.endpoint_id, ()):
            wanted[f"{own_id}:{change.id}:{service_id}:reminder:{n}"] = (change, service_id, down_for)
    # A reminder made before keys carried the instance id counts as made.
    legacy = {key: key.split(":", 1)[1] for key in wanted}
    existing = _existing_keys(list(wanted) + list(legacy.values()))
    missing = {key for key in wanted if key not in existing and legacy[key] not in existing}
    if missing:
        identity = instance_fields()
        rows = []
        for key in sorted(missing):
            change, service_id, down_for = wanted[key]
            endpoint = endpoints[change.endpoint_id]
            message = AlertMessage(
                event=EVENT_REMINDER, endpoint_id=endpoint.id, endpoint_name=endpoint.name,
                target=public_target(endpoint.target), check_type=endpoint.check_type, status=STATUS_DOWN,
                previous_status=change.from_status, occurred_at=now,
                reason=endpoint.last_failure_reason or change.reason, down_since=change.changed_at,
                duration_seconds=round(down_for, 3), **identity,
            )
            rows.append(_row(key, message, service_id, change.id, now))
        _insert(rows)
    db.session.commit()
    return _due_ids(wanted, now)


def _change_message(change: StatusChange, endpoint, identity: dict) -> AlertMessage:
    common = dict(endpoint_id=endpoint.id, endpoint_name=endpoint.name, target=public_target(endpoint.target),
                  check_type=endpoint.check_type, status=change.to_status,
                  previous_status=change.from_status, occurred_at=change.changed_at, **identity)
    if change.alert_event == EVENT_DOWN:
        return AlertMessage(event=EVENT_DOWN, reason=change.reason, down_since=change.changed_at, **common)
    if change.alert_event == EVENT_PARTIAL:
        return AlertMessage(event=EVENT_PARTIAL, reason=change.reason, **common)
    went_down = db.session.execute(
        select(StatusChange)
        .where(StatusChange.endpoint_id == change.endpoint_id, StatusChange.id < change.id,
               StatusChange.alert_event.in_((EVENT_DOWN, EVENT_PARTIAL)))
        .order_by(StatusChange.id.desc()).limit(1)
    ).scalar_one_or_none()
    if went_down is None:  # its history was pruned; say what we know
        return AlertMessage(event=EVENT_UP, **common)
    return AlertMessage(event=EVENT_UP, reason=went_down.reason, down_since=went_down.changed_at,
                        duration_seconds=round((change.changed_at - went_down.changed_at).total_seconds(), 3),
                        **common)


def raise_certificate_alerts(*, now: datetime | None = None) -> list[int]:
    """Alert once when an HTTPS endpoint's certificate has fewer than its
    ``cert_expiry_days`` left, and once more when it is renewed.

    The certificate is the one this instance saw last (any location's when
    this instance does not check the endpoint). The dedupe key holds the
    certificate's expiry, so each certificate alerts once. Returns the ids of
    the deliveries to enqueue. Commits.
    """
    from app.models import LocationStatus
    from app.services import configuration

    now = now or utcnow()
    if not _alerts_here():
        db.session.commit()
        return []
    own_id = configuration.instance_id()
    endpoints = {row.id: row for row in db.session.execute(
        select(Endpoint.id, Endpoint.name, Endpoint.target, Endpoint.check_type, Endpoint.cert_expiry_days,
               Endpoint.certificate_alerted_expiry)
        .where(Endpoint.check_type == "http", Endpoint.is_paused.is_(False), Endpoint.target.ilike("https:%"))
    )}
    # Certificate alerts wait out a maintenance window (a renewal may be the work).
    for endpoint_id in maintenance.endpoints_in_maintenance(_with_groups(endpoints), now):
        del endpoints[endpoint_id]
    if not endpoints:
        db.session.commit()
        return []
    seen: dict[int, tuple[bool, datetime]] = {}
    for endpoint_id, instance_id, expires_at, checked_at in db.session.execute(
        select(LocationStatus.endpoint_id, LocationStatus.instance_id, LocationStatus.certificate_expires_at,
               LocationStatus.last_checked_at)
        .where(LocationStatus.endpoint_id.in_(endpoints), LocationStatus.certificate_expires_at.is_not(None))
        .order_by(LocationStatus.last_checked_at)
    ):
        # Newest last: this instance's own certificate wins, else the newest seen.
        own = instance_id == own_id
        current = seen.get(endpoint_id)
        if own or current is None or not current[0]:
            seen[endpoint_id] = (own, expires_at)
    services = _enabled_services(set(seen))
    identity = instance_fields()
    wanted, marks = {}, []
    for endpoint_id, (_, expires_at) in seen.items():
        endpoint = endpoints[endpoint_id]
        days_left = int((expires_at - now).total_seconds() // 86400)
        alerted = endpoint.certificate_alerted_expiry
        if days_left < endpoint.cert_expiry_days and alerted != expires_at:
            event, mark = EVENT_CERT_EXPIRING, expires_at
        elif days_left >= endpoint.cert_expiry_days and alerted is not None and alerted != expires_at:
            event, mark = EVENT_CERT_RENEWED, None
        else:
            continue
        marks.append({"_id": endpoint_id, "_mark": mark})
        message = AlertMessage(
            event=event, endpoint_id=endpoint_id, endpoint_name=endpoint.name,
            target=public_target(endpoint.target), check_type=endpoint.check_type, status="UP",
            previous_status=None, occurred_at=now, certificate_expires_at=expires_at,
            certificate_days_left=days_left, **identity)
        for service_id in services.get(endpoint_id, ()):
            wanted[f"cert:{endpoint_id}:{event}:{expires_at.isoformat()}:{service_id}"] = (message, service_id)
        logger.info("endpoint %s (%s): certificate %s, %d days left", endpoint_id, endpoint.name,
                    "expiring" if event == EVENT_CERT_EXPIRING else "renewed", days_left)
    missing = set(wanted) - _existing_keys(wanted)
    _insert([_row(key, wanted[key][0], wanted[key][1], None, now) for key in sorted(missing)])
    if marks:
        table = Endpoint.__table__
        db.session.execute(update(table).where(table.c.id == bindparam("_id"))
                           .values(certificate_alerted_expiry=bindparam("_mark")), marks)
    db.session.commit()
    return _due_ids(wanted, now)


def _row(key: str, message: AlertMessage, service_id: int, change_id: int | None, now: datetime) -> dict:
    return {
        "notification_service_id": service_id, "endpoint_id": message.endpoint_id,
        "status_change_id": change_id, "event": message.event, "status": DELIVERY_PENDING,
        "dedupe_key": key, "payload": message.to_payload(), "attempts": 0,
        "next_attempt_at": now, "created_at": now,
    }


def _enabled_services(endpoint_ids: set[int]) -> dict[int, list[int]]:
    by_endpoint: dict[int, list[int]] = {}
    link = endpoint_notifications.c
    for endpoint_id, service_id in db.session.execute(
        select(link.endpoint_id, link.notification_service_id)
        .join(NotificationService, NotificationService.id == link.notification_service_id)
        .where(link.endpoint_id.in_(endpoint_ids), NotificationService.is_enabled.is_(True))
        .order_by(link.notification_service_id)
    ):
        by_endpoint.setdefault(endpoint_id, []).append(service_id)
    return by_endpoint


def _with_groups(endpoints: dict) -> dict[int, str | None]:
    """The group of each of ``endpoints`` (by id), for maintenance lookups."""
    return dict(db.session.execute(
        select(Endpoint.id, Endpoint.group_name).where(Endpoint.id.in_(list(endpoints)))).all())


def _endpoints(endpoint_ids: set[int]) -> dict:
    return {row.id: row for row in db.session.execute(
        select(Endpoint.id, Endpoint.name, Endpoint.target, Endpoint.check_type)
        .where(Endpoint.id.in_(endpoint_ids))
    )}


def _chunks(keys) -> Iterable[list]:
    keys = sorted(keys)
    for start in range(0, len(keys), _CHUNK):
        yield keys[start:start + _CHUNK]


def _existing_keys(keys) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(keys):
        found.update(db.session.execute(
            select(NotificationDelivery.dedupe_key).where(NotificationDelivery.dedupe_key.in_(chunk))
        ).scalars())
    return found


def _due_ids(keys, now: datetime) -> list[int]:
    ids: list[int] = []
    for chunk in _chunks(keys):
        ids.extend(db.session.execute(
            select(NotificationDelivery.id)
            .where(NotificationDelivery.dedupe_key.in_(chunk), NotificationDelivery.status == DELIVERY_PENDING,
                   NotificationDelivery.next_attempt_at <= now)
        ).scalars())
    return sorted(ids)


def _insert(rows: list[dict]) -> None:
    # Two raisers racing (a job and the sweep) both insert; the unique key keeps one.
    if not rows:
        return
    make = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    stmt = make(NotificationDelivery.__table__).on_conflict_do_nothing(index_elements=["dedupe_key"])
    db.session.execute(stmt, rows)
    logger.info("raised %d alert deliveries: %s", len(rows),
                ", ".join(f"{r['event']} endpoint {r['endpoint_id']} via service {r['notification_service_id']}"
                          for r in rows[:10]) + (" ..." if len(rows) > 10 else ""))


# --- delivering -----------------------------------------------------------------


def deliver(delivery_id: int, *, now: datetime | None = None) -> str:
    """Send one pending, due delivery; returns its new status, or ``skipped``
    when it was not this call's to send (already claimed, sent, or not due)."""
    now = now or utcnow()
    table = NotificationDelivery.__table__
    # 1. Claim: only the caller whose UPDATE changed the row sends it.
    claimed = db.session.execute(
        update(table)
        .where(table.c.id == delivery_id, table.c.status == DELIVERY_PENDING,
               or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now))
        .values(status=DELIVERY_SENDING, claimed_at=now, attempts=table.c.attempts + 1)
    ).rowcount
    db.session.commit()
    if claimed != 1:
        return "skipped"
    # 2. Read what sending needs, then end the transaction: no locks or open
    #    transaction while a slow service answers.
    delivery = db.session.get(NotificationDelivery, delivery_id)
    if delivery is None:  # its service or endpoint was deleted meanwhile
        db.session.commit()
        return "skipped"
    attempts, payload, event, endpoint_id = delivery.attempts, dict(delivery.payload), delivery.event, delivery.endpoint_id
    service = delivery.service
    service_id, kind, config, enabled = service.id, service.kind, dict(service.config or {}), service.is_enabled
    db.session.commit()
    # Re-checked at the last moment: a primary that stepped down or fenced
    # itself since the alert was raised leaves it to the new primary.
    from app.services import configuration

    state = configuration.snapshot()
    if not state.may_alert:
        reason = f"not sent: this instance is {state.role} (epoch {state.epoch}), no longer the primary"
        db.session.execute(update(table).where(table.c.id == delivery_id, table.c.status == DELIVERY_SENDING,
                                               table.c.claimed_at == now)
                           .values(status=DELIVERY_FAILED, last_error=reason, next_attempt_at=None))
        db.session.commit()
        logger.warning("%s alert for endpoint %s (delivery %s) %s", event, endpoint_id, delivery_id, reason)
        return DELIVERY_FAILED
    # 3. Send.
    error: DeliveryError | None = None
    if not enabled:
        error = DeliveryError("the notification service is disabled", retryable=False)
    else:
        try:
            notifier_for(kind, config).send(AlertMessage.from_payload(payload))
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # a notifier bug must not lose the alert
            logger.exception("sending delivery %s through service %s raised", delivery_id, service_id)
            error = DeliveryError(f"unexpected error: {exc}", retryable=True)
    # 4. Record the outcome, conditioned on still holding our claim.
    if error is None:
        values = {"status": DELIVERY_SENT, "sent_at": utcnow(), "last_error": None, "next_attempt_at": None}
        outcome = f"sent (attempt {attempts})"
    elif error.retryable and attempts < MAX_ATTEMPTS:
        wait = backoff(attempts)
        values = {"status": DELIVERY_PENDING, "next_attempt_at": now + wait, "last_error": error.reason}
        outcome = f"failed (attempt {attempts}), retrying in {wait.total_seconds():g} s: {error.reason}"
    else:
        reason = error.reason if not error.retryable else f"{error.reason} (gave up after {attempts} attempts)"
        values = {"status": DELIVERY_FAILED, "last_error": reason, "next_attempt_at": None}
        outcome = f"failed for good: {reason}"
    finished = db.session.execute(
        update(table)
        .where(table.c.id == delivery_id, table.c.status == DELIVERY_SENDING, table.c.claimed_at == now)
        .values(**values)
    ).rowcount
    db.session.commit()
    log = logger.info if error is None else logger.warning
    log("%s alert for endpoint %s via service %s (delivery %s): %s", event, endpoint_id, service_id,
        delivery_id, outcome)
    if finished != 1:
        logger.warning("delivery %s was reclaimed while it was being sent; outcome not recorded", delivery_id)
    return values["status"]


def raise_cluster_alert(headline: str, detail: str, *, now: datetime | None = None) -> list[int]:
    """Tell the enabled default services (every enabled one, if none is a
    default) about a cluster transition (a new
    primary); returns the deliveries to send. Commits."""
    from app.services import configuration

    now = now or utcnow()
    enabled = db.session.execute(
        select(NotificationService.id, NotificationService.is_default)
        .where(NotificationService.is_enabled.is_(True)).order_by(NotificationService.id)).all()
    # The services new endpoints get by default; with none marked, every one.
    services = [row.id for row in enabled if row.is_default] or [row.id for row in enabled]
    state = configuration.snapshot()
    message = AlertMessage(event=EVENT_CLUSTER, endpoint_id=None, endpoint_name=headline, target="", check_type="",
                           status=state.role.upper(), previous_status=None, occurred_at=now, reason=detail,
                           **instance_fields())
    keys = {f"cluster:{state.instance_id}:{state.epoch}:{state.role}:{service_id}": service_id
            for service_id in services}
    _insert([_row(key, message, service_id, None, now) for key, service_id in keys.items()])
    db.session.commit()
    due = _due_ids(keys, now)
    if due:
        from workers.jobs.alerts import enqueue_deliveries

        try:
            enqueue_deliveries(due)
        except Exception:  # Redis away: the sweep sends them
            logger.warning("could not enqueue cluster alerts now; the sweep sends them")
    return due


def release_stale_claims(*, now: datetime | None = None) -> int:
    """Put deliveries claimed by a worker that died mid-send back to pending."""
    now = now or utcnow()
    table = NotificationDelivery.__table__
    released = db.session.execute(
        update(table)
        .where(table.c.status == DELIVERY_SENDING, table.c.claimed_at < now - STALE_CLAIM)
        .values(status=DELIVERY_PENDING, next_attempt_at=now)
    ).rowcount
    db.session.commit()
    if released:
        logger.warning("released %d deliveries whose worker stopped while sending", released)
    return released


def due_deliveries(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Pending deliveries to enqueue now: retries that are due, and new ones
    whose own enqueue seems lost."""
    now = now or utcnow()
    table = NotificationDelivery.__table__
    return list(db.session.execute(
        select(table.c.id)
        .where(table.c.status == DELIVERY_PENDING, table.c.next_attempt_at <= now,
               # Never claimed: its own enqueue is likely still in the queue.
               or_(table.c.claimed_at.is_not(None), table.c.created_at <= now - NEW_DELIVERY_GRACE))
        .order_by(table.c.next_attempt_at, table.c.id).limit(limit)
    ).scalars())


def prune_deliveries(*, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete finished deliveries older than ``older_than``; returns how many.

    Safe for deduplication: alerts are raised only for recent status
    changes, and reminder keys count intervals, so an old row is never
    needed to stop a repeat.
    """
    now = now or utcnow()
    table = NotificationDelivery.__table__
    deleted = db.session.execute(
        table.delete().where(table.c.created_at < now - older_than,
                             table.c.status.in_((DELIVERY_SENT, DELIVERY_FAILED)))
    ).rowcount
    db.session.commit()
    if deleted:
        logger.info("pruned %d deliveries older than %s", deleted, older_than)
    return deleted


# --- for the UI -------------------------------------------------------------------


def recent_deliveries(limit: int = 50) -> list[NotificationDelivery]:
    """The newest deliveries (alerts and tests), newest first."""
    return list(db.session.execute(
        select(NotificationDelivery).order_by(NotificationDelivery.id.desc()).limit(limit)
    ).scalars())


def failed_deliveries(limit: int = 100) -> list[NotificationDelivery]:
    """Deliveries that failed for good (tests excluded), newest first."""
    return list(db.session.execute(
        select(NotificationDelivery)
        .where(NotificationDelivery.status == DELIVERY_FAILED, NotificationDelivery.event != "test")
        .order_by(NotificationDelivery.id.desc()).limit(limit)
    ).scalars())


def retry_delivery(delivery_id: int) -> bool:
    """Give a failed delivery a fresh set of tries; the next sweep (within
    ~15 s) enqueues it. Returns False unless it had failed."""
    table = NotificationDelivery.__table__
    changed = db.session.execute(
        update(table).where(table.c.id == delivery_id, table.c.status == DELIVERY_FAILED)
        .values(status=DELIVERY_PENDING, attempts=0, next_attempt_at=utcnow())
    ).rowcount
    db.session.commit()
    return changed == 1
