"""Failover duty: every FAILOVER_CHECK_INTERVAL seconds, this instance's
part in detecting a dead primary, electing its successor, following the
newest epoch and fencing (``app.services.failover``). The leading clock runs
it on a thread of its own (see ``workers/clock.py``)."""
from __future__ import annotations

import logging

from workers.jobs import app

logger = logging.getLogger(__name__)

LOCK_KEY = "monitor:failover:lock"


def failover_tick(flask_app=None) -> dict:
    """One round, one at a time per instance (a Redis lock): a round that
    outlasts the interval is skipped, not run twice side by side (two
    clocks may both lead for a moment while the lease moves)."""
    from app.services import failover, queues

    with (flask_app or app()).app_context():
        # Probes, a vote round and a promotion, each bounded by its timeout.
        ttl = int(4 * failover.probe_timeout() + 30)
        lock = queues.connection().lock(LOCK_KEY, timeout=ttl, blocking=False)
        if not lock.acquire():
            return {"skipped": "another round is running"}
        try:
            return failover.tick()
        finally:
            try:
                lock.release()
            except Exception:  # expired: nothing to release
                pass
