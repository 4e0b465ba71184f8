"""Redis and the RQ queues that carry background work."""
from __future__ import annotations

import os
from functools import lru_cache

from redis import Redis
from rq import Queue

CHECKS_QUEUE = "checks"
SYNC_QUEUE = "sync"
NOTIFY_QUEUE = "notify"
ALL_QUEUES = (CHECKS_QUEUE, SYNC_QUEUE, NOTIFY_QUEUE)


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
