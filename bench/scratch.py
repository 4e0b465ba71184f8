"""Helpers of the benchmarks: a PostgreSQL database of a run's own, how
busy the machine was, and what every page benchmark does around its
figures (statistics after seeding, the database's name, the report file,
a server time as the table shows it).

A PostgreSQL database of a run's own:
``--database postgresql://...`` names a server (and a database to connect
to there); a run makes a database of its own on it and drops it at the end,
so it never wipes a database that tests or another run are using.
"""
from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"


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


def analyze_after_seeding(db) -> None:
    """On PostgreSQL, fresh statistics for the rows just seeded (the planner
    would otherwise plan for empty tables); nothing on SQLite."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("ANALYZE"))
        db.session.commit()


def close_database(app) -> str:
    """Close the app's connections; the database's name (sqlite, postgresql)."""
    from app.extensions import db

    with app.app_context():
        name = db.engine.dialect.name
        db.engine.dispose()
    return name


def write_report(report: dict, name: str) -> Path:
    """Print ``report`` as JSON and keep it as ``bench/results/<name>.json``."""
    print(json.dumps(report, indent=2))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{name}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out.relative_to(ROOT)}", file=sys.stderr)
    return out


def server_time(got: dict, load: float) -> str:
    """A timed figure (``summary``'s median, p95 and CPU) as a table cell."""
    return (f"{got['median_ms']:.0f} / {got['p95_ms']:.0f} ms median / p95 "
            f"(CPU {got.get('cpu_median_ms', 0):.0f} ms), load {load}")
