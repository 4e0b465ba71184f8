"""Redis and the RQ queues that carry background work, and how a process
rides out a Redis that went away."""
from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from functools import lru_cache

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from rq import Queue

logger = logging.getLogger(__name__)

CHECKS_QUEUE = "checks"
SYNC_QUEUE = "sync"
NOTIFY_QUEUE = "notify"
ALL_QUEUES = (CHECKS_QUEUE, SYNC_QUEUE, NOTIFY_QUEUE)

# What a Redis that is down, restarting or out of reach raises.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
# While Redis is away a process says so once a minute, not at every call.
OUTAGE_REPORT_SECONDS = 60.0


def redis_url() -> str:
    """REDIS_URL, which ``python -m app start`` sets to its embedded Redis."""
    url = os.environ.get("REDIS_URL")
    if not url:
        raise RuntimeError(
            "REDIS_URL is not set: start the monitor with `python -m app start` "
            "(embedded Redis) or set REDIS_URL to a Redis server"
        )
    return url


@lru_cache(maxsize=4)
def _connection(url: str) -> Redis:
    return Redis.from_url(url, health_check_interval=30, socket_connect_timeout=5, socket_timeout=30)


def connection() -> Redis:
    return _connection(redis_url())


def queue(name: str) -> Queue:
    return Queue(name, connection=connection())


def where(url: str) -> str:
    """A Redis URL fit for a log line: without its credentials."""
    return re.sub(r"://[^/@\s]*@", "://", url)


class RedisOutage:
    """A Redis outage as one process sees it.

    However many calls fail, it is reported when it starts, once a minute
    while it lasts, and once when it ends.
    """

    def __init__(self, process: str, *, report_every: float = OUTAGE_REPORT_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.process = process
        self.report_every = report_every
        self.clock = clock
        self.since: float | None = None
        self.reported_at = 0.0

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        """A call to Redis failed because Redis is unreachable."""
        now = self.clock()
        reason = where(f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")[:300]
        if self.since is None:
            self.since = self.reported_at = now
            logger.warning("%s: %s is unreachable (%s); waiting for it, reporting once a minute",
                           self.process, self.subject(), reason)
        elif now - self.reported_at >= self.report_every:
            self.reported_at = now
            logger.warning("%s: %s still unreachable after %.0f s (%s)",
                           self.process, self.subject(), now - self.since, reason)

    def subject(self) -> str:
        """What is away, for the log line."""
        return f"Redis at {_url_or_unset()}"

    def recovered(self) -> None:
        """A call to Redis worked: if Redis was away, say it is back."""
        if self.since is not None:
            logger.warning("%s: %s is reachable again after %.0f s",
                           self.process, self.subject(), self.clock() - self.since)
            self.since = None


def _url_or_unset() -> str:
    url = os.environ.get("REDIS_URL")
    return where(url) if url else "(REDIS_URL unset)"


def wait_until_reachable(outage: RedisOutage, stopping: Callable[[], bool], *, interval: float = 1.0) -> bool:
    """Block until Redis answers PING (True), or until ``stopping()`` (False).

    Asked through a client of its own with 1 s timeouts and no retries, so
    a stop request is seen within about a second even while Redis is away.
    """
    probe = Redis.from_url(redis_url(), socket_connect_timeout=1, socket_timeout=1,
                           retry=Retry(NoBackoff(), 0), health_check_interval=0)
    try:
        while not stopping():
            started = time.monotonic()
            try:
                probe.ping()
            except UNREACHABLE as exc:
                outage.failed(exc)
            else:
                outage.recovered()
                return True
            while not stopping() and time.monotonic() - started < interval:
                time.sleep(0.1)
        return False
    finally:
        probe.close()
