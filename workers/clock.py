"""The clock: once a second, claim work due within the next second and
enqueue it. It runs nothing itself but failover duty.

Only one clock acts at a time: each holds a short Redis lease and renews it
every tick, so a second clock (a double deploy) waits as a warm standby.

While Redis is away the clock claims nothing (it cannot renew its lease)
and says so once a minute; checks it had claimed but could not enqueue are
kept and enqueued first when Redis is back, so a claim is never dropped.

Failover duty (``workers.jobs.failover``: probe the primary, vote, fence)
runs on a thread of the leading clock every FAILOVER_CHECK_INTERVAL
seconds, not on the workers: a dead primary must be replaced on time even
while every worker is busy with slow checks, and its rounds, slow while a
peer is unreachable, must never keep checks waiting.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from app.services import database_outage, queues
from app.services.database_outage import DatabaseOutage

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0
LEASE_KEY = "monitor:clock:leader"
LEASE_MS = 5000
# Most due checks claimed in one tick; the rest are claimed next tick.
MAX_CLAIM_PER_TICK = 20000
# Queue length past which the clock stops adding work: workers are down or
# far behind, and piling up stale checks helps nobody.
MAX_BACKLOG_JOBS = 500

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


@dataclass(frozen=True)
class PeriodicTask:
    """Work the clock enqueues every ``every(settings)`` seconds."""

    name: str
    every: Callable[[object], float]
    enqueue: Callable[["Clock"], None]


def _enqueue_prune(clock: "Clock") -> None:
    from workers.jobs.checks import prune_results

    clock.checks.enqueue(prune_results, job_timeout=600, result_ttl=0)


def _enqueue_alert_sweep(clock: "Clock") -> None:
    from app.services import queues
    from workers.jobs.alerts import sweep

    notify = queues.queue(queues.NOTIFY_QUEUE)
    if notify.count <= MAX_BACKLOG_JOBS:  # else workers are behind; the next sweep catches up
        notify.enqueue(sweep, job_timeout=120, result_ttl=0, failure_ttl=3600)


def _cluster_state(clock: "Clock"):
    from app.services import configuration

    with clock.app.app_context():
        return configuration.snapshot()


def _enqueue_sync(clock: "Clock") -> None:
    from app.services import queues
    from workers.jobs.sync import sync_with_primary

    if not _cluster_state(clock).is_dependent:
        return
    queues.queue(queues.SYNC_QUEUE).enqueue(sync_with_primary, job_timeout=300, result_ttl=0,
                                            failure_ttl=3600)


def _enqueue_primary_housekeeping(clock: "Clock") -> None:
    from app.services import queues
    from workers.jobs.sync import primary_housekeeping

    if not _cluster_state(clock).is_primary:
        return
    queues.queue(queues.SYNC_QUEUE).enqueue(primary_housekeeping, job_timeout=120, result_ttl=0)


def _enqueue_consensus(clock: "Clock") -> None:
    from workers.jobs.consensus import reevaluate_consensus

    if clock.checks.count <= MAX_BACKLOG_JOBS:
        clock.checks.enqueue(reevaluate_consensus, job_timeout=300, result_ttl=0, failure_ttl=3600)


def _enqueue_connectivity(clock: "Clock") -> None:
    from workers.jobs.consensus import check_connectivity

    if clock.settings.connectivity_check_target is not None:
        clock.checks.enqueue(check_connectivity, job_timeout=60, result_ttl=0, failure_ttl=3600)


# Adding periodic work is one function above and one line here. Sync jobs
# check the role themselves, since failover changes it at run time.
PERIODIC_TASKS = [
    PeriodicTask("prune-results", lambda settings: 600.0, _enqueue_prune),
    PeriodicTask("alert-sweep", lambda settings: 15.0, _enqueue_alert_sweep),
    PeriodicTask("sync-with-primary", lambda settings: float(settings.heartbeat_interval), _enqueue_sync),
    PeriodicTask("primary-housekeeping", lambda settings: 10.0, _enqueue_primary_housekeeping),
    PeriodicTask("reevaluate-consensus", lambda settings: 5.0, _enqueue_consensus),
    PeriodicTask("check-connectivity", lambda settings: 10.0, _enqueue_connectivity),
]


class Clock:
    def __init__(self, app):
        self.app = app
        self.settings = app.config["SETTINGS"]
        self.redis = queues.connection()
        self.checks = queues.queue(queues.CHECKS_QUEUE)
        self.token = uuid.uuid4().hex
        self.renew = self.redis.register_script(_RENEW)
        self.leader = False
        self.next_run: dict[str, float] = {}
        self.stopping = False
        # Batches of (endpoint ids, due times) claimed in the database but not
        # yet in the queue: Redis went away between the claim and the enqueue.
        self.unsent: list[tuple[list[int], list[float]]] = []
        self.outage = queues.RedisOutage(f"clock (pid {os.getpid()})")
        self.database_outage = DatabaseOutage(f"clock (pid {os.getpid()})", app.config["SQLALCHEMY_DATABASE_URI"])
        self.regaining = False

    def hold_lease(self) -> bool:
        held = bool(self.renew(keys=[LEASE_KEY], args=[self.token, LEASE_MS]))
        if held != self.leader and not (held and self.regaining):  # "Redis is back" said it
            logger.info("clock %s leader", "is now" if held else "is no longer")
        self.leader = held
        self.regaining = False
        return held

    def lost_redis(self, exc: BaseException) -> None:
        """Redis is unreachable: this clock cannot know it still leads."""
        self.outage.failed(exc)
        self.regaining = self.regaining or self.leader
        self.leader = False  # failover rounds wait too: they take a Redis lock

    def tick(self, now: float) -> int:
        """Enqueue due checks and periodic work; returns endpoints enqueued."""
        self.enqueue_unsent()  # claims are this clock's, leading or not
        if not self.hold_lease():
            return 0
        enqueued = self.enqueue_due_checks(now)
        for task in PERIODIC_TASKS:
            if now >= self.next_run.get(task.name, 0.0):
                self.next_run[task.name] = now + task.every(self.settings)
                try:
                    task.enqueue(self)
                except queues.UNREACHABLE:
                    raise  # the outage is reported once, by run
                except Exception:
                    logger.exception("could not enqueue %s", task.name)
        return enqueued

    def enqueue_due_checks(self, now: float) -> int:
        from app.services.scheduling import claim_due

        backlog = self.checks.count
        if backlog > MAX_BACKLOG_JOBS:
            logger.warning("checks queue holds %d jobs; skipping this tick until workers catch up", backlog)
            return 0
        with self.app.app_context():
            due = claim_due(now, MAX_CLAIM_PER_TICK, ahead=TICK_SECONDS)
        size = self.settings.check_batch_size
        for start in range(0, len(due), size):
            batch = due[start:start + size]
            self.unsent.append(([d.endpoint_id for d in batch], [d.due_at for d in batch]))
        self.enqueue_unsent()
        return len(due)

    def enqueue_unsent(self) -> None:
        """Enqueue claimed batches, oldest first. One that fails (Redis went
        away) stays, with those after it, for the next tick; the job starts
        each check at once if its due time has passed."""
        from workers.jobs.checks import run_checks

        while self.unsent:
            endpoint_ids, due_at = self.unsent[0]
            self.checks.enqueue(run_checks, endpoint_ids, due_at, job_timeout=600, result_ttl=0, failure_ttl=3600)
            self.unsent.pop(0)

    def failover_duty(self) -> None:
        """Failover rounds, FAILOVER_CHECK_INTERVAL apart, while leading."""
        from workers.jobs.failover import failover_tick

        interval = float(self.settings.failover_check_interval)
        reported = 0.0
        while not self.stopping:
            started = time.time()
            if self.leader:
                try:
                    failover_tick(self.app)
                except database_outage.UNREACHABLE:
                    pass  # the tick reports the outage
                except queues.UNREACHABLE:
                    pass  # Redis went away mid-round: the main loop reports it and stops leading
                except Exception:
                    if started - reported >= 60:  # one line a minute while it keeps failing
                        logger.exception("failover round failed; retrying every %g s", interval)
                        reported = started
            time.sleep(max(0.2, interval - (time.time() - started)))

    def run(self) -> None:
        logger.info("clock started (pid %d)", os.getpid())
        # (A standalone's round is one read of its role.)
        threading.Thread(target=self.failover_duty, name="failover", daemon=True).start()
        while not self.stopping:
            now = time.time()
            try:
                self.tick(now)
            except queues.UNREACHABLE as exc:
                self.lost_redis(exc)
            except database_outage.UNREACHABLE as exc:
                # Nothing was claimed: the schedule waits in the database
                # and is claimed once it answers again.
                self.outage.recovered()
                self.database_outage.failed(exc)
            except Exception:
                logger.exception("clock tick failed; retrying next second")
            else:
                self.outage.recovered()
                self.database_outage.recovered()
            # Work is claimed a tick ahead and started at its due time by the
            # job, so the tick length is not part of the schedule lag.
            self._sleep_until(now + TICK_SECONDS)
        if self.unsent:
            logger.warning("clock stopped with %d claimed checks it could not enqueue (Redis was away); "
                           "their slot is skipped", sum(len(ids) for ids, _ in self.unsent))
        logger.info("clock stopped")

    def _sleep_until(self, moment: float) -> None:
        # In slices, so a stop is seen at once rather than after the tick
        # (a signal handler cannot safely wake an Event the loop waits on).
        while not self.stopping and (left := moment - time.time()) > 0:
            time.sleep(min(left, 0.1))


def main() -> None:
    from app.services import configuration, failover
    from app.services.sync import dependent
    from workers import jobs

    app = jobs.app()  # the app of this process's background work, as a worker's
    with app.app_context():
        configuration.ensure_initialized()
        failover.rejoin_at_start()  # also under the Procfile, where no launcher ran
        warning = dependent.clear_text_warning(configuration.primary_url())
        if configuration.is_dependent() and warning:
            logger.warning(warning)
    clock = Clock(app)

    def stop(signum, frame):
        clock.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    clock.run()


if __name__ == "__main__":
    main()
