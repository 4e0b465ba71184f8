"""Alert jobs on the notify queue: send one delivery; sweep every ~15 s.

Check jobs only store deliveries and enqueue ``deliver``: a slow or broken
notification service never holds up a check.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from workers.jobs import app

logger = logging.getLogger(__name__)

# Longest a deliver job may run: above any notifier's own timeout.
DELIVER_JOB_TIMEOUT = 360
# Queue length past which the sweep adds nothing: workers are down or behind,
# and the rows stay pending in the database until they catch up.
MAX_NOTIFY_BACKLOG = 1000


def _when(now: float | None) -> datetime | None:
    return datetime.fromtimestamp(now, timezone.utc) if now is not None else None


def deliver(delivery_id: int, now: float | None = None) -> str:
    """Send one delivery if it is pending and due (``now``: unix seconds, for tests)."""
    from app.services import alerts

    with app().app_context():
        return alerts.deliver(delivery_id, now=_when(now))


def sweep(now: float | None = None) -> dict:
    """Free stale claims, raise missed alerts, alerts held back by a
    maintenance window that has ended, and reminders, enqueue due
    deliveries; drop finished ones older than DELIVERY_RETENTION_DAYS."""
    from app.services import alerts, maintenance

    with app().app_context():
        when = _when(now)
        retention = timedelta(days=app().config["SETTINGS"].delivery_retention_days)
        alerts.prune_deliveries(older_than=retention, now=when)
        released = alerts.release_stale_claims(now=when)
        maintenance.release_held_alerts(now=when)  # before raise_alerts, which sends what it writes
        raised = alerts.raise_alerts(None, now=when)
        reminders = alerts.raise_reminders(now=when)
        certificates = alerts.raise_certificate_alerts(now=when)
        due = alerts.due_deliveries(now=when)
    enqueued = enqueue_deliveries(sorted(set(raised) | set(reminders) | set(certificates) | set(due)), now=now)
    return {"released": released, "raised": len(raised), "reminders": len(reminders), "enqueued": enqueued}


def enqueue_deliveries(delivery_ids: list[int], now: float | None = None) -> int:
    """Enqueue ``deliver`` for each id on the notify queue; returns how many.

    ``now`` (tests) is passed on, so a sweep at a fake time delivers at it."""
    from app.services import queues

    if not delivery_ids:
        return 0
    queue = queues.queue(queues.NOTIFY_QUEUE)
    if queue.count > MAX_NOTIFY_BACKLOG:
        logger.warning("notify queue holds %d jobs; %d deliveries wait for the next sweep",
                       queue.count, len(delivery_ids))
        return 0
    for delivery_id in delivery_ids:
        queue.enqueue(deliver, delivery_id, now, job_timeout=DELIVER_JOB_TIMEOUT, result_ttl=0,
                      failure_ttl=86400)
    return len(delivery_ids)


def alert_transitions(transitions) -> None:
    """Raise alerts for status changes a check job just stored, and enqueue them.

    Called inside the check job's app context. Never raises: the results
    are already committed, and the sweep raises whatever this misses.
    """
    from app.extensions import db
    from app.services import alerts

    if not transitions:
        return
    try:
        ids = alerts.raise_alerts({t.endpoint_id for t in transitions})
    except Exception:
        db.session.rollback()
        logger.exception("could not raise alerts for endpoints %s; the sweep will retry",
                         sorted({t.endpoint_id for t in transitions}))
        return
    try:
        enqueue_deliveries(ids)
    except Exception:
        logger.exception("could not enqueue deliveries %s; the sweep will retry", ids)
