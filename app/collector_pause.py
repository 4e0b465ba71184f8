"""Pausing Python's cycle collector while bulk work builds many objects.

Reading a configuration document of 10,000 endpoints, or storing a batch
of them, makes millions of objects (YAML nodes, dicts, validated inputs,
parameter sets) that all live until the work ends. The collector runs
after every 700 new objects and now and then walks every object of the
process, so at that size its passes cost more than the work: reading a
10,000-endpoint document took 1.5 s of CPU with it and 0.5 s without
(docs/performance.md, "Creating endpoints in bulk"). Reference counting
still frees everything that is not a cycle; cycles made meanwhile wait
for the collector's next pass once it runs again.
"""
from __future__ import annotations

import gc
import threading
from contextlib import contextmanager


class _Pause:
    """Nested and concurrent pauses: the collector runs again when the last ends
    (and only if it ran before the first)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = False

    def enter(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1

    def leave(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._was_enabled:
                gc.enable()


_PAUSE = _Pause()


@contextmanager
def collector_paused():
    """Run the block without cyclic garbage collection (see the module's docstring)."""
    _PAUSE.enter()
    try:
        yield
    finally:
        _PAUSE.leave()
