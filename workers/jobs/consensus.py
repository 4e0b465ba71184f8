"""Consensus jobs: vote again on every endpoint every few seconds, and check
this instance's connectivity target."""
from __future__ import annotations

import logging
import socket
import time

from workers.jobs import app

logger = logging.getLogger(__name__)

LOCK_KEY = "monitor:consensus:lock"
# One pass at a time: a pass slower than the clock's period is skipped, not queued twice.
LOCK_SECONDS = 120
# While this key lives, passes are skipped: after each pass it is set to live
# long enough that passes take at most MAX_CORE_SHARE of one core. The clock
# asks for one every 5 s; at 1,000 endpoints a pass takes tens of
# milliseconds and nothing changes, but at 50,000 it takes seconds, and
# back-to-back passes would keep a core busy just voting again.
REST_KEY = "monitor:consensus:rest"
MAX_CORE_SHARE = 0.1
CONNECTIVITY_TIMEOUT_SECONDS = 5.0


def reevaluate_consensus() -> dict:
    """Vote on every endpoint again (locations go stale and probes recover
    with no result arriving), alert on what changed, write the regular
    aggregated rows. Safe to run twice: a second pass finds nothing changed.
    Skipped while resting after the last pass (``REST_KEY``): a pass that
    took t seconds is followed by none for 9 t, so a slow pass (many
    endpoints) runs less often than the clock asks."""
    from app.services import consensus, queues
    from workers.jobs.alerts import alert_transitions

    redis = queues.connection()
    if redis.exists(REST_KEY):
        return {"skipped": "resting after the last pass"}
    lock = redis.lock(LOCK_KEY, timeout=LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return {"skipped": "another pass is running"}
    try:
        with app().app_context():
            started = time.perf_counter()
            summary = consensus.reevaluate()
            alert_transitions(summary.pop("transitions"))
            took = time.perf_counter() - started
            rest_ms = int(took * (1 / MAX_CORE_SHARE - 1) * 1000)
            if rest_ms > 0:
                redis.set(REST_KEY, "1", px=rest_ms)
            summary["seconds"] = round(took, 3)
            return summary
    finally:
        try:
            lock.release()
        except Exception:  # expired: nothing to release
            pass


def check_connectivity() -> dict:
    """Open a TCP connection to CONNECTIVITY_CHECK_TARGET and record the
    outcome: while it fails, this location is probe-offline and does not vote."""
    from app.services import consensus

    with app().app_context():
        target = app().config["SETTINGS"].connectivity_check_target
        if target is None:
            consensus.note_connectivity(None, None)
            return {"skipped": "no CONNECTIVITY_CHECK_TARGET"}
        host, port = target
        try:
            with socket.create_connection((host, port), timeout=CONNECTIVITY_TIMEOUT_SECONDS):
                pass
        except OSError as exc:
            error = f"{host}:{port}: {exc.strerror or type(exc).__name__}"
            consensus.note_connectivity(False, error)
            logger.warning("connectivity check failed (%s): this location does not vote until it passes", error)
            return {"ok": False, "error": error}
        consensus.note_connectivity(True, None)
        return {"ok": True}
