"""Check jobs: run a batch of due checks; prune old results."""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select

from workers.jobs import app

logger = logging.getLogger(__name__)

_executor: ThreadPoolExecutor | None = None

# Seconds a check may run past its own timeout before the job gives up on it.
CHECK_GRACE_SECONDS = 5.0
# How often a batch stores the results that have come in so far.
STORE_EVERY_SECONDS = 0.5


def _pool(size: int) -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="check")
    return _executor


def run_checks(endpoint_ids: list[int], due_at: list[float]) -> dict:
    """Check a batch of endpoints concurrently and store the results.

    ``due_at[i]`` is when ``endpoint_ids[i]`` was due (unix seconds); the
    delay until its check started is kept as ``scheduleLagMs`` in metadata.
    """
    from app.checks import CheckResult, run_check
    from app.models import Endpoint
    from app.services import configuration
    from app.services.results import record_results
    from workers.jobs.alerts import alert_transitions

    with app().app_context():
        from app.extensions import db

        settings = app().config["SETTINGS"]
        due = dict(zip(endpoint_ids, due_at))
        rows = db.session.execute(
            select(Endpoint.id, Endpoint.check_type, Endpoint.target, Endpoint.port,
                   Endpoint.timeout_seconds, Endpoint.options)
            .where(Endpoint.id.in_(endpoint_ids), Endpoint.is_paused.is_(False))
        ).all()
        instance_id, location = configuration.instance_identity()
        db.session.commit()  # end the read transaction while checks run

        def one(row):
            started = time.time()
            result = run_check(row.check_type, row.target, row.port, row.timeout_seconds, row.options)
            result.metadata["scheduleLagMs"] = round(max(0.0, started - due[row.id]) * 1000.0, 1)
            return result

        pool = _pool(settings.check_concurrency)
        futures = {pool.submit(one, row): row for row in rows}
        longest = max((row.timeout_seconds for row in rows), default=0)
        deadline = time.monotonic() + longest + CHECK_GRACE_SECONDS
        pending = set(futures)
        checked = failing = changes = 0

        def store(finished):
            nonlocal checked, failing, changes
            transitions = record_results(finished, instance_id=instance_id, location=location)
            alert_transitions(transitions)  # stores and enqueues deliveries; sends nothing here
            checked += len(finished)
            failing += sum(1 for _, r in finished if not r.is_ok)
            changes += len(transitions)

        # Store results as they come in (every STORE_EVERY_SECONDS), so one
        # slow endpoint does not hold back the rest of its batch.
        while pending:
            done, pending = wait(pending, timeout=max(0.0, min(STORE_EVERY_SECONDS, deadline - time.monotonic())))
            finished = [(futures[f].id, f.result()) for f in done]
            if pending and time.monotonic() >= deadline:
                finished += [(futures[f].id, CheckResult(
                    is_ok=False, check_type=futures[f].check_type,
                    failure_reason=f"check did not finish within {futures[f].timeout_seconds:g} s"))
                    for f in pending]
                pending = set()
            if finished:
                store(finished)
        logger.debug("checked %d endpoints, %d failing, %d status changes", checked, failing, changes)
        return {"checked": checked, "failing": failing, "statusChanges": changes}


def prune_results(retention_days: int) -> int:
    """Delete raw results older than the retention period; returns rows deleted."""
    from app.models import ResponseTime

    with app().app_context():
        from app.extensions import db

        cutoff = datetime.now(timezone.utc) - timedelta(days=retention_days)
        deleted = db.session.execute(delete(ResponseTime).where(ResponseTime.checked_at < cutoff)).rowcount
        db.session.commit()
        if deleted:
            logger.info("pruned %d results older than %d days", deleted, retention_days)
        return deleted


def roll_up_results() -> str:
    """Roll finished hours of results up into hourly rows, so pages never
    have to do it while someone waits. Safe to run twice."""
    from app.services.rollups import MAX_HOURS_PER_CALL, roll_up

    with app().app_context():
        mark = None
        # Catch up after a long pause in bounded steps (48 hours each).
        for _ in range(24 * 100 // MAX_HOURS_PER_CALL + 1):
            previous, mark = mark, roll_up()
            if mark == previous:
                break
        return mark.isoformat() if mark else ""
