"""Check jobs: run a batch of due checks; prune what is past its retention."""
from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ALL_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from sqlalchemy import select

from app.checks import CheckResult, resolve
from app.services import database_outage
from workers.jobs import app

logger = logging.getLogger(__name__)

# Seconds a check may run past its own timeout before it is reported DOWN.
CHECK_GRACE_SECONDS = 5.0
# How often finished results are stored while a batch is running; not when
# the batch ends (and stores them anyway) within HANDOFF_AFTER_SECONDS of its
# last start: each store has a fixed cost (about 3 ms of CPU), and a batch
# usually spans the one second the clock claimed.
STORE_EVERY_SECONDS = 1.0
# After its last check starts, a batch waits this long for the rest; checks
# still running then are handed to the process's stragglers thread, so a
# slow endpoint never holds up the worker (and the schedule) for its timeout.
HANDOFF_AFTER_SECONDS = 0.25
# Checks due within one slot start together.
DISPATCH_SLOT_SECONDS = 0.05
# Results that could not be stored (the database was away) are kept in the
# process and tried again this often; at most this many are kept.
RETRY_STORE_SECONDS = 2.0
MAX_KEPT_RESULTS = 100_000

_executor: ThreadPoolExecutor | None = None
_stragglers: Stragglers | None = None
_lock = threading.Lock()


@dataclass(frozen=True)
class Running:
    """A check in flight and what is needed to store its result."""

    endpoint_id: int
    check_type: str
    timeout: float
    deadline: float  # time.monotonic() after which it is reported DOWN
    instance_id: str
    location: str


def _pool(size: int) -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            # Every check running may need a name looked up at once.
            resolve.configure(size)
            _executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="check")
        return _executor


def store(finished: list[tuple[int, CheckResult]], instance_id: str, location: str) -> int:
    """Store results and raise alerts for status changes; returns the changes."""
    from app.services.results import record_results
    from workers.jobs.alerts import alert_transitions

    transitions = record_results(finished, instance_id=instance_id, location=location)
    try:
        alert_transitions(transitions)  # stores and enqueues deliveries; sends nothing here
    except database_outage.UNREACHABLE as exc:
        # The results are committed: raising would have them stored twice.
        logger.warning("alerts for %d status changes wait for the alert sweep: the database went away (%s)",
                       len(transitions), type(exc).__name__)
    return len(transitions)


def store_or_keep(finished: list[tuple[int, CheckResult]], instance_id: str, location: str) -> int:
    """``store``, or, while the database is away, keep the results in this
    process (``Stragglers.keep``) to be stored once it answers; returns the
    status changes stored now."""
    from app.extensions import db

    try:
        return store(list(finished), instance_id, location)
    except database_outage.UNREACHABLE as exc:
        try:
            db.session.rollback()
        except database_outage.UNREACHABLE:
            pass  # the connection is gone; the pool pings the next one
        _stragglers_thread().keep(list(finished), instance_id, location, exc)
        return 0


def collect(futures: dict[Future, Running], timeout: float) -> list[tuple[Future, tuple[int, CheckResult]]]:
    """Wait up to ``timeout`` for all of ``futures``; return the finished
    ones and those past their deadline (as DOWN results)."""
    if futures and timeout > 0:
        # All of them, not the first: waiting puts a waiter on every future,
        # and a wait per finished check would make a batch cost its size squared.
        wait(futures, timeout=timeout, return_when=ALL_COMPLETED)
    now = time.monotonic()
    out = []
    for future, running in futures.items():
        if future.done():
            out.append((future, (running.endpoint_id, future.result())))
        elif now >= running.deadline:
            out.append((future, (running.endpoint_id, CheckResult(
                is_ok=False, check_type=running.check_type,
                failure_reason=f"check did not finish within {running.timeout:g} s"))))
    return out


class Stragglers(threading.Thread):
    """Stores the results of checks that outlived their batch, and results
    that could not be stored because the database was away: those are kept
    and tried again every ``RETRY_STORE_SECONDS`` until it answers."""

    def __init__(self):
        super().__init__(name="check-stragglers", daemon=True)
        self.lock = threading.Lock()
        self.futures: dict[Future, Running] = {}
        self.kept: list[tuple[str, str, list[tuple[int, CheckResult]]]] = []  # (instance, location, results)
        self.retry_at = 0.0
        self.outage = database_outage.DatabaseOutage(f"worker (pid {os.getpid()})",
                                                     app().config["SQLALCHEMY_DATABASE_URI"])

    def adopt(self, futures: dict[Future, Running]) -> None:
        with self.lock:
            self.futures.update(futures)

    def keep(self, items: list[tuple[int, CheckResult]], instance_id: str, location: str,
             exc: BaseException | None = None) -> None:
        """Keep results to store later (``exc``: why they were not stored now)."""
        with self.lock:
            if exc is not None:
                self.outage.failed(exc)
                self.retry_at = time.monotonic() + RETRY_STORE_SECONDS
            self.kept.append((instance_id, location, items))
            held = sum(len(batch) for _, _, batch in self.kept)
            while held > MAX_KEPT_RESULTS:
                _, _, dropped = self.kept.pop(0)
                held -= len(dropped)
                logger.warning("dropped %d check results kept while the database is away: over %d kept",
                               len(dropped), MAX_KEPT_RESULTS)

    def store_kept(self) -> None:
        """Store the kept results, oldest first; on a database outage the
        rest stay kept for the next try."""
        with self.lock:
            if not self.kept or time.monotonic() < self.retry_at:
                return
            kept, self.kept = self.kept, []
        stored = 0
        for index, (instance_id, location, items) in enumerate(kept):
            try:
                with app().app_context():
                    store(items, instance_id, location)
                stored += len(items)
            except database_outage.UNREACHABLE as exc:
                with self.lock:
                    self.outage.failed(exc)
                    self.kept[:0] = kept[index:]
                    self.retry_at = time.monotonic() + RETRY_STORE_SECONDS
                return
            except Exception:
                logger.exception("could not store %d check results", len(items))
        with self.lock:
            if self.outage.ongoing:
                logger.warning("stored %d check results kept while the database was away", stored)
            self.outage.recovered()

    def run(self) -> None:
        while True:
            self.store_kept()
            with self.lock:
                futures = dict(self.futures)
            if not futures:
                time.sleep(0.2)
                continue
            finished = collect(futures, STORE_EVERY_SECONDS)
            if not finished:
                continue
            with self.lock:
                for future, _ in finished:
                    self.futures.pop(future, None)
            by_identity: dict[tuple[str, str], list] = {}
            for future, item in finished:
                running = futures[future]
                by_identity.setdefault((running.instance_id, running.location), []).append(item)
            for (instance_id, location), items in by_identity.items():
                self.keep(items, instance_id, location)  # stored at the top of the loop


def _stragglers_thread() -> Stragglers:
    global _stragglers
    with _lock:
        if _stragglers is None or not _stragglers.is_alive():
            _stragglers = Stragglers()
            _stragglers.start()
        return _stragglers


def _adopt_stragglers(futures: dict[Future, Running]) -> None:
    _stragglers_thread().adopt(futures)


def run_checks(endpoint_ids: list[int], due_at: list[float]) -> dict:
    """Check a batch of endpoints and store the results.

    1. Each check starts at its due time (``due_at[i]``, unix seconds; the
       clock claims up to a second ahead), give or take a dispatch slot, on
       the process's thread pool; the delay from due time to start is kept
       as ``scheduleLagMs``.
    2. Finished results are stored every ``STORE_EVERY_SECONDS`` while
       checks are still to start later than ``HANDOFF_AFTER_SECONDS`` from
       now, and at the end.
    3. ``HANDOFF_AFTER_SECONDS`` after the last start, checks still running
       go to the stragglers thread and the job ends, freeing the worker.
    """
    from app.checks import run_check
    from app.models import Endpoint
    from app.services import configuration

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
            result = run_check(row.check_type, row.target, row.port, row.timeout_seconds, row.options,
                               location=location)
            result.metadata["scheduleLagMs"] = round(max(0.0, started - due[row.id]) * 1000.0, 1)
            return result

        pool = _pool(settings.check_concurrency)
        running: dict[Future, Running] = {}
        ready: list[tuple[int, CheckResult]] = []
        counts = {"checked": 0, "failing": 0, "statusChanges": 0}
        last_store = time.monotonic()

        def gather(timeout: float) -> None:
            nonlocal last_store
            for future, item in collect(running, timeout):
                running.pop(future)
                ready.append(item)
            if ready and time.monotonic() - last_store >= STORE_EVERY_SECONDS:
                counts["statusChanges"] += store_or_keep(ready, instance_id, location)
                counts["checked"] += len(ready)
                counts["failing"] += sum(1 for _, r in ready if not r.is_ok)
                ready.clear()
                last_store = time.monotonic()

        # Start checks in slots of DISPATCH_SLOT_SECONDS: each at most that
        # late, with one wake-up per slot rather than one per check.
        queue = sorted(rows, key=lambda r: due[r.id])
        last_due = due[queue[-1].id] if queue else 0.0
        next_row = 0
        while next_row < len(queue):
            wait_for = due[queue[next_row].id] - time.time()
            if wait_for > 0:
                time.sleep(wait_for)
            slot_end = time.time() + DISPATCH_SLOT_SECONDS
            while next_row < len(queue) and due[queue[next_row].id] <= slot_end:
                row = queue[next_row]
                next_row += 1
                future = pool.submit(one, row)
                running[future] = Running(row.id, row.check_type, row.timeout_seconds,
                                          time.monotonic() + row.timeout_seconds + CHECK_GRACE_SECONDS,
                                          instance_id, location)
            if (time.monotonic() - last_store >= STORE_EVERY_SECONDS
                    and last_due - time.time() > HANDOFF_AFTER_SECONDS):
                gather(0)
        handoff_at = time.monotonic() + HANDOFF_AFTER_SECONDS
        while running and (left := handoff_at - time.monotonic()) > 0:
            gather(min(left, STORE_EVERY_SECONDS))
        if ready:
            counts["statusChanges"] += store_or_keep(ready, instance_id, location)
            counts["checked"] += len(ready)
            counts["failing"] += sum(1 for _, r in ready if not r.is_ok)
        if running:
            logger.info("%d checks still running after their batch; storing them when they end", len(running))
            _adopt_stragglers(dict(running))
        counts["handedOff"] = len(running)
        return counts


def prune_results() -> dict:
    """Delete results, counts and consensus history older than their
    retention (``retention.prune``: committed batches, bounded in time),
    then checkpoint SQLite's write-ahead log. Safe to run twice."""
    from app.services import retention

    with app().app_context():
        pruned = retention.prune()
        retention.checkpoint()
        return {"pruned": pruned.rows, "finished": pruned.finished}
