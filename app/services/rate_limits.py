"""In-process rate limits: at most ``limit`` events per key in a sliding window.

For limits that only need to stop one user from hammering something (a
button that makes outbound requests). The counts live in this process: with
several web workers a user gets the limit in each, which still bounds the
rate, and it needs no table or Redis. Limits that must hold across processes
(sign-in attempts) keep their counts in the database instead; see
``login_throttle``.
"""
from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque


class SlidingWindowLimit:
    """At most ``limit`` events per key within ``window_seconds``."""

    def __init__(self, limit: int, window_seconds: float, clock=time.monotonic):
        self.limit = limit
        self.window_seconds = window_seconds
        self.clock = clock
        self._events: dict[object, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def take(self, key) -> int | None:
        """Count one event for ``key`` if the limit allows it and return None;
        otherwise count nothing and return the seconds until it would."""
        now = self.clock()
        with self._lock:
            events = self._events[key]
            while events and events[0] <= now - self.window_seconds:
                events.popleft()
            if len(events) >= self.limit:
                return max(1, math.ceil(events[0] + self.window_seconds - now))
            events.append(now)
            return None
