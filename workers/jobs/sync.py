"""Sync jobs: a dependent's rounds with the primary, the primary's registry upkeep."""
from __future__ import annotations

import logging
import time
from datetime import datetime

from flask import current_app
from redis.exceptions import LockError

from workers.jobs import app

logger = logging.getLogger(__name__)

LOCK_KEY = "monitor:sync:lock"
LAST_ATTEMPT = "primary_last_attempt_at"
MAX_BACKOFF_SECONDS = 60


def backoff_seconds(failures: int, *, at_most: float = MAX_BACKOFF_SECONDS) -> float:
    """Wait before the next attempt after ``failures`` failed ones: 1, 2, 4, ... 60 s
    (or ``at_most``: the failover probe interval while the primary is suspected)."""
    return 0.0 if failures <= 0 else float(min(2 ** (failures - 1), MAX_BACKOFF_SECONDS, at_most))


def sync_with_primary() -> dict:
    """Register, send heartbeats with the outbox, pull configuration.

    Runs one at a time per instance (a Redis lock), and backs off while the
    primary is unreachable. Safe to run twice: the primary stores each
    result once and acknowledges it by id.
    """
    from app.extensions import db
    from app.services import configuration, failover, queues
    from app.services.sync import dependent

    with app().app_context():
        if not configuration.is_dependent():
            return {"skipped": "not a dependent"}
        failures = int(configuration.get_state(dependent.FAILURES, "0"))
        last = configuration.get_state(LAST_ATTEMPT)
        if last and failures:
            waited = time.time() - datetime.fromisoformat(last).timestamp()
            suspecting = configuration.get_state(failover.SUSPECTED_SINCE) is not None
            at_most = current_app.config["SETTINGS"].failover_check_interval if suspecting else MAX_BACKOFF_SECONDS
            seen = configuration.get_state(failover.PRIMARY_SEEN_AT)
            answers_again = seen is not None and datetime.fromisoformat(seen) > datetime.fromisoformat(last)
            if not answers_again and waited < backoff_seconds(failures, at_most=at_most):
                return {"skipped": "backing off", "failures": failures}
        # The lock outlives one request to the primary, and each request
        # renews it, so a worker killed mid-round holds it off for seconds,
        # not for the longest round there could be.
        ttl = 2 * current_app.config["SETTINGS"].connection_timeout + 15
        lock = queues.connection().lock(LOCK_KEY, timeout=ttl, blocking=False)
        if not lock.acquire():
            return {"skipped": "another sync is running"}
        try:
            configuration.set_state(LAST_ATTEMPT, datetime.now().astimezone().isoformat())
            db.session.commit()
            try:
                return dependent.sync_once(before_request=lock.reacquire)
            except (dependent.PrimaryUnavailable, dependent.NotAuthorized) as exc:
                return {"failed": str(exc)}
            except LockError:
                db.session.rollback()
                logger.warning("the sync lock expired during a round; the round was abandoned")
                return {"failed": "the sync lock expired"}
        finally:
            try:
                lock.release()
            except LockError:
                pass  # expired: nothing to release


def primary_housekeeping() -> dict:
    """Keep the primary's own registry row fresh, mark silent instances and
    delete tokens that can never verify again."""
    from app.extensions import db
    from app.services import configuration
    from app.services.sync import primary, tokens

    with app().app_context():
        if not configuration.is_primary():
            return {"skipped": "not the primary"}
        primary.register_self()
        summary = primary.mark_silent_instances()
        summary["tokensPruned"] = tokens.prune()
        db.session.commit()
        return summary
