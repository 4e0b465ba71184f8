"""An RQ worker on the checks, sync and notify queues.

It runs jobs in-process (``SimpleWorker``) rather than forking per job: the
app, database pool and long-lived clients (Kafka producers) are made once and
reused, and checks inside a job run on a thread pool.

A Redis that goes away (restarted, killed, out of reach) does not end the
process: rq's own loop would quit on the first failed call and a restarted
worker would fail again at once, so a dead Redis used to mean a crash loop
and a traceback per restart. Here the worker waits for Redis, saying so
once a minute, and then starts its loop again as a new rq worker (Redis
may have come back empty, without this worker's registration). Staying up
matters for results too: checks still running when Redis went away finish
on this process's threads and are stored in the database, which needs no
Redis; a process that exited would lose them.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested

from app.services import queues

logger = logging.getLogger(__name__)


class RedisWasAway(StopRequested):
    """Ends rq's work loop quietly after an outage, to start a fresh one."""


class _RqReconnectLines(logging.Filter):
    """Drops rq's own "could not connect to Redis" lines (one every 2 s from
    its command listener while Redis is away): the outage is reported once
    a minute by ``RedisOutage`` instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "could not connect to Redis" not in str(record.msg)


class MonitorWorker(SimpleWorker):
    """A SimpleWorker that waits out a Redis outage instead of quitting.

    Every step of rq's loop that talks to Redis (suspension check,
    maintenance, dequeue, heartbeat, running a job and recording it) is
    wrapped: when Redis is unreachable it waits until Redis answers (or a
    stop is asked for), then ends the loop with ``RedisWasAway``, which rq
    treats as a stop; ``main`` then starts a new worker.
    """

    def __init__(self, *args, outage: queues.RedisOutage, shutdown: threading.Event, **kwargs):
        super().__init__(*args, **kwargs)
        self.outage = outage
        self.shutdown = shutdown
        self.redis_was_away = False
        self.riding_out = False

    def _ride_out(self, exc: BaseException):
        self.redis_was_away = True
        self.riding_out = True
        self.outage.failed(exc)
        try:
            queues.wait_until_reachable(self.outage, self.shutdown.is_set)
        finally:
            self.riding_out = False
        raise RedisWasAway()

    def _guarded(self, step, *args, **kwargs):
        try:
            return step(*args, **kwargs)
        except queues.UNREACHABLE as exc:
            self._ride_out(exc)

    def check_for_suspension(self, burst):
        return self._guarded(super().check_for_suspension, burst)

    def run_maintenance_tasks(self):
        return self._guarded(super().run_maintenance_tasks)

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        return self._guarded(super().dequeue_job_and_maintain_ttl, timeout, max_idle_time)

    def heartbeat(self, timeout=None, pipeline=None):
        if pipeline is not None:  # queued on a pipeline: its execute() fails, not this
            return super().heartbeat(timeout, pipeline)
        result = self._guarded(super().heartbeat, timeout)
        self.outage.recovered()
        return result

    def execute_job(self, job, queue):
        # A failure here comes from rq's bookkeeping before or after the job:
        # the job's own Redis calls (enqueueing alerts) never raise, and its
        # results are already in the database.
        return self._guarded(super().execute_job, job, queue)

    def request_stop(self, signum, frame):
        self.shutdown.set()
        if self.riding_out:
            raise StopRequested()  # nothing to tell an absent Redis: stop now
        try:
            super().request_stop(signum, frame)
        except queues.UNREACHABLE as exc:
            # rq marked the stop, then failed to note it in Redis: raised
            # here, inside the job in progress, it would end the job.
            self.outage.failed(exc)

    def teardown(self):
        if self.outage.ongoing:
            # Redis is away: nothing can be recorded there; just stop
            # listening for rq commands.
            if self.pubsub_thread:
                self.pubsub_thread.stop()
            return
        try:
            super().teardown()
        except queues.UNREACHABLE as exc:
            self.outage.failed(exc)
            if self.pubsub_thread:
                self.pubsub_thread.stop()


def main() -> int:
    from workers import jobs

    app = jobs.app()  # build once, before the first job
    level = app.config["SETTINGS"].log_level
    rq_level = "WARNING" if level == "INFO" else level
    logging.getLogger("rq.worker").setLevel(rq_level)
    logging.getLogger("rq.worker").addFilter(_RqReconnectLines())
    outage = queues.RedisOutage(f"worker (pid {os.getpid()})")
    shutdown = threading.Event()

    def stop(signum, frame):  # rq installs its own while its loop runs
        shutdown.set()

    connection = queues.connection()
    while not shutdown.is_set():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if not queues.wait_until_reachable(outage, shutdown.is_set):
            break
        worker = MonitorWorker([Queue(name, connection=connection) for name in queues.ALL_QUEUES],
                               connection=connection, outage=outage, shutdown=shutdown)
        try:
            worker.work(logging_level=rq_level)
        except queues.UNREACHABLE as exc:  # registering it failed: Redis went away again
            outage.failed(exc)
            continue
        if not (worker.redis_was_away or outage.ongoing or shutdown.is_set()):
            # rq's loop quit for some other reason (it has logged why); let
            # the supervisor restart this process after its backoff.
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
