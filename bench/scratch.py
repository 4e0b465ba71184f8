"""Helpers of the benchmarks: a PostgreSQL database of a run's own, and how
busy the machine was.

A PostgreSQL database of a run's own:
``--database postgresql://...`` names a server (and a database to connect
to there); a run makes a database of its own on it and drops it at the end,
so it never wipes a database that tests or another run are using.
"""
from __future__ import annotations

import os
import uuid

from sqlalchemy import create_engine, make_url, text


def create_database(server_url: str, prefix: str) -> str:
    """Create ``<prefix>_<pid>_<random>`` on the server; returns its URL."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    server = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    server.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, url: str) -> None:
    """Drop the database ``url`` names (made by ``create_database``), even
    with sessions still connected to it."""
    server = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    server.dispose()


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores from /proc/stat (Linux)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """How busy all cores were between two ``cpu_ticks``, whatever ran there."""
    total = after[1] - before[1]
    return round(100.0 * (after[0] - before[0]) / total, 1) if total else None
