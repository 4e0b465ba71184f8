"""Database bytes per endpoint: a month of results at a 60 s interval, and
what the default retention keeps of it.

    .venv/bin/python -m bench.storage
    .venv/bin/python -m bench.storage --endpoints 20
    .venv/bin/python -m bench.storage --database-url postgresql://postgres@127.0.0.1:5432/bench

1. Creates a fresh database (SQLite in a temporary ``DATA_DIR`` unless
   ``--database-url`` names a PostgreSQL database, whose public schema is
   dropped and re-created) and migrates it: a standalone instance, one
   location.
2. ``--endpoints`` (100) http endpoints with 30 days of results each at a
   60 s interval (43,200 per endpoint), generated in SQL oldest first as a
   running instance stores them, each with what a plain-HTTP check
   records (random UUID, status, response time, metadata with the HTTP
   status, URL, redirects and schedule lag; 1 in 500 failing with a
   reason); the consensus history that goes with them (a regular
   ``aggregated_results`` row every 5 minutes with one location's view,
   a change a day); then their hourly and daily counts, as storing them
   would have kept them (``bench.states``).
3. Measures every table with its indexes (SQLite: ``dbstat``;
   PostgreSQL: ``pg_total_relation_size``), runs the clock's prune job
   with the default retention (raw results and regular consensus rows 7
   days, hourly counts 90, daily counts 730), compacts (SQLite ``VACUUM``,
   PostgreSQL ``VACUUM FULL``: what the space held is, not what the file
   has yet to give back) and measures again.
4. Reports, per endpoint (one location; each further location adds its
   own results and counts): a month of everything, what the default
   retention holds of it, and, from the bytes per row measured, the steady
   state (7 days of results, 90 of hours, 730 of days) and how much it
   grows per month once there. JSON goes to ``bench/results/``.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.dashboard import build_app
from bench.scratch import close_database, write_report
from bench.states import count_seeded_results, run_clock_job

INTERVAL_SECONDS = 60
DAYS = 30
TABLES = ("response_times", "result_location_hours", "result_location_days", "aggregated_results")
# The default retention, in days (app.config): what the steady state holds.
KEPT_DAYS = {"response_times": 7, "result_location_hours": 90, "result_location_days": 730}


def seed(app, endpoints: int, now: datetime) -> dict:
    """Endpoints, a month of results and consensus rows, generated in SQL."""
    from sqlalchemy import insert, text

    from app.extensions import db
    from app.models import Endpoint
    from app.services import configuration

    started = time.perf_counter()
    steps = DAYS * 86400 // INTERVAL_SECONDS
    start = (now - timedelta(days=DAYS)).replace(tzinfo=None).isoformat(sep=" ")
    with app.app_context():
        own = configuration.instance_id()
        db.session.execute(insert(Endpoint.__table__), [{
            "id": n + 1, "name": f"service-{n:04d}", "check_type": "http",
            "target": f"http://service-{n:04d}.example.test/health", "options": {},
            "interval_seconds": INTERVAL_SECONDS, "timeout_seconds": 10.0, "failure_threshold": 1,
            "success_threshold": 1, "is_paused": False, "created_at": now - timedelta(days=DAYS + 1),
            "updated_at": now, "status": "UP", "consecutive_failures": 0, "consecutive_successes": 1,
            "next_check_at": 0.0,
        } for n in range(endpoints)])
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            series = "generate_series(0, :last) AS k(i)"
            at = f"CAST(:start AS timestamp) + (k.i * {INTERVAL_SECONDS} + e.id % 60) * interval '1 second'"
            uuid, prefix, order = "gen_random_uuid()::text", "", " ORDER BY k.i, e.id"
            lag = "round(random() * 20)::numeric / 10"
            as_json = "CAST(({}) AS json)"
        else:
            series = "k"
            at = f"strftime('%Y-%m-%d %H:%M:%f000', :start, '+' || (k.i * {INTERVAL_SECONDS} + e.id % 60) || ' seconds')"
            uuid = ("lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) "
                    "|| '-a' || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))")
            prefix = "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < :last) "
            order = ""  # CROSS JOIN keeps this nesting order on SQLite
            lag = "abs(random() % 20) / 10.0"
            as_json = "{}"
        failed = "((k.i * 7919 + e.id * 104729) % 500 = 0)"
        metadata = ("'{\"httpStatus\": ' || CASE WHEN " + failed + " THEN '503' ELSE '200' END || "
                    "', \"url\": \"' || e.target || '\", \"redirects\": 0, \"scheduleLagMs\": ' || " + lag + " || '}'")
        db.session.execute(text(
            f"{prefix}INSERT INTO response_times (result_id, endpoint_id, instance_id, location, checked_at, is_ok, "
            "status, response_time_ms, failure_reason, check_type, check_metadata, synced_at) "
            f"SELECT {uuid}, e.id, :own, 'frankfurt', {at}, NOT {failed}, CASE WHEN {failed} THEN 'DOWN' ELSE 'UP' END, "
            f"CASE WHEN {failed} THEN NULL ELSE 20 + (k.i * 31 + e.id * 17) % 200 + 0.123 END, "
            f"CASE WHEN {failed} THEN 'HTTP 503 (expected 200-399)' END, 'http', {as_json.format(metadata)}, {at} "
            f"FROM {series} CROSS JOIN endpoints e{order}"
        ), {"start": start, "last": steps - 1, "own": own})
        # The consensus history: a regular row every 5 minutes, a change a day.
        regular = steps // 5
        cadence = at.replace(f"k.i * {INTERVAL_SECONDS}", f"k.i * {5 * INTERVAL_SECONDS}")
        details = ("'{\"rule\": \"majority\", \"checking\": 1, \"locations\": [{\"instanceId\": \"' || :own || "
                   "'\", \"location\": \"frankfurt\", \"status\": \"UP\", \"responseTimeMs\": 42.5, \"checkedAt\": "
                   "\"2026-12-05T10:00:00+00:00\", \"fresh\": true, \"probeOffline\": false}]}'")
        db.session.execute(text(
            f"{prefix.replace(':last', ':regular')}INSERT INTO aggregated_results (endpoint_id, computed_at, "
            "consensus, locations_up, locations_down, locations_total, avg_response_time_ms, min_response_time_ms, "
            "max_response_time_ms, is_change, details, reason) "
            f"SELECT e.id, {cadence}, 'UP', 1, 0, 1, 42.5, 42.5, 42.5, k.i % 288 = 0, {as_json.format(details)}, NULL "
            f"FROM {series.replace(':last', ':regular')} CROSS JOIN endpoints e{order}"
        ), {"start": start, "regular": regular - 1, "own": own})
        db.session.commit()
        results = db.session.execute(text("SELECT COUNT(*) FROM response_times")).scalar_one()
        db.session.remove()
    return {"results": results, "consensus_rows": regular * endpoints,
            "seconds": round(time.perf_counter() - started, 1)}


def sizes(app) -> dict[str, dict]:
    """Bytes (table and its indexes) and rows of each table."""
    from app.extensions import db

    out = {}
    with app.app_context():
        postgresql = db.engine.dialect.name == "postgresql"
        for table in TABLES:
            if postgresql:
                size = db.session.execute(db.text(f"SELECT pg_total_relation_size('{table}')")).scalar_one()
            else:
                size = db.session.execute(db.text(
                    "SELECT SUM(pgsize) FROM dbstat WHERE name IN "
                    "(SELECT name FROM sqlite_schema WHERE tbl_name = :table)"), {"table": table}).scalar_one()
            rows = db.session.execute(db.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
            out[table] = {"bytes": int(size or 0), "rows": rows}
        if postgresql:
            whole = db.session.execute(db.text("SELECT pg_database_size(current_database())")).scalar_one()
        else:
            whole = os.path.getsize(db.engine.url.database)
        out["database"] = {"bytes": int(whole)}
        db.session.remove()
    return out


def compact(app) -> None:
    from app.extensions import db

    with app.app_context():
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM FULL" if db.engine.dialect.name == "postgresql" else "VACUUM")
        db.session.remove()


def per_endpoint(measured: dict, endpoints: int) -> dict:
    return {table: round(measured[table]["bytes"] / endpoints) for table in (*TABLES, "database")}


def steady_state(month: dict, endpoints: int) -> dict:
    """Per endpoint, from the bytes per row of the month: what the default
    retention holds once it applies to everything, and the growth per
    month from then on (daily counts and consensus changes, kept 2 years)."""
    def per_row(table):
        return month[table]["bytes"] / max(1, month[table]["rows"])

    rows_per_day = {"response_times": 86400 // INTERVAL_SECONDS, "result_location_hours": 24,
                    "result_location_days": 1}
    held = {table: per_row(table) * rows_per_day[table] * days for table, days in KEPT_DAYS.items()}
    # Regular consensus rows as long as raw results; one change a day here, kept as long as daily counts.
    held["aggregated_results"] = per_row("aggregated_results") * (288 * 7 + 730)
    growth = per_row("result_location_days") * 30 + per_row("aggregated_results") * 30
    return {"held_bytes": {k: round(v) for k, v in held.items()}, "held_total_bytes": round(sum(held.values())),
            "growth_per_month_bytes": round(growth)}


def measure(endpoints: int = 100, database_url: str | None = None) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        app = build_app(data_dir, database_url, primary=False)
        now = datetime.now(timezone.utc)
        seeded = seed(app, endpoints, now)
        seeded["counts"] = count_seeded_results(app)
        print(f"seeded {endpoints} endpoints: {seeded}", file=sys.stderr)
        compact(app)
        month = sizes(app)
        job = run_clock_job(app)
        print(f"clock job: {job}", file=sys.stderr)
        compact(app)
        kept = sizes(app)
        dialect = close_database(app)
        return {
            "benchmark": "storage", "at": now.isoformat(timespec="seconds"), "database": dialect,
            "endpoints": endpoints, "days": DAYS, "interval_seconds": INTERVAL_SECONDS, "seeded": seeded,
            "machine": f"{platform.machine()}, {platform.python_version()}, load average {os.getloadavg()[0]:.1f}",
            "month": month, "month_per_endpoint_bytes": per_endpoint(month, endpoints),
            "clock_job": job, "after_default_retention": kept,
            "after_default_retention_per_endpoint_bytes": per_endpoint(kept, endpoints),
            "steady_state_per_endpoint": steady_state(month, endpoints),
        }
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _kb(value: float) -> str:
    return f"{value / 1024:,.0f} kB"


def figures(quick: bool = False) -> list[dict]:
    """Bytes per endpoint per month at 60 s, SQLite."""
    report = measure(endpoints=20 if quick else 100)
    month = report["month_per_endpoint_bytes"]
    steady = report["steady_state_per_endpoint"]
    return [
        {"figure": "database bytes per endpoint, a month at 60 s, one location, nothing pruned (SQLite)",
         "target": "reported", "measured": f"{_kb(month['database'])} (raw results {_kb(month['response_times'])})",
         "passed": True},
        {"figure": "database bytes per endpoint at the default retention, steady state (SQLite)",
         "target": "reported",
         "measured": f"{_kb(steady['held_total_bytes'])}, growing {_kb(steady['growth_per_month_bytes'])} a month",
         "passed": True},
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--database-url", help="a PostgreSQL database to use (its schema is wiped)")
    args = parser.parse_args(argv)
    report = measure(args.endpoints, args.database_url)
    write_report(report, f"storage-{report['database']}-{report['at'].replace(':', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
