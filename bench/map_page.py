"""Location map server time with 1,000 endpoints checked from 3 instances for a day.

    .venv/bin/python -m bench.map_page
    .venv/bin/python -m bench.map_page --state never-rolled-up
    .venv/bin/python -m bench.map_page --database-url postgresql://postgres@127.0.0.1:5432/bench

1. Creates a fresh database (SQLite in a temporary ``DATA_DIR`` unless
   ``--database-url`` names a PostgreSQL database, whose public schema is
   dropped and re-created), migrates it, and makes this instance a primary
   (sync API on) with two registered dependents, "virginia" and
   "singapore", heard from a few seconds ago and placed by coordinates.
2. Bulk-inserts ``--endpoints`` endpoints (60 s interval), each with a day
   and an hour (25 hours, the longest "last day" the map counts) of
   results from all 3 instances, oldest first as they would be stored
   (generated in SQL): 4.5 million for 1,000 endpoints. 2 % of one
   instance's checks fail. Then counts them per hour and day as storing
   them would have (``bench.states``).
3. In each state of ``--state`` (see ``bench.states``: never rolled up,
   then after the clock's job): times ``--requests`` GETs of ``/map`` (the
   whole page) and of its live refresh (``HX-Request``: markers and
   regions), and counts the statements of one refresh.
4. Prints median and p95 of each and writes them as JSON to ``bench/results/``.
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

from bench.dashboard import signed_in_client, summary, timed_get
from bench.endpoint_page import count_statements
from bench.scratch import ROOT, analyze_after_seeding, close_database, server_time, write_report
from bench.states import CHOICES, count_seeded_results, run_clock_job, wanted

INTERVAL_SECONDS = 60
HOURS = 25
MEMBERS = {"virginia": ("5f0c2a6e-0d7a-4c47-9d54-6a1f3a0b7c11", 38.9, -77.4),
           "singapore": ("7d1e3b7f-1e8b-4d58-8e65-7b2f4b1c8d22", 1.35, 103.82)}
TYPICAL_MS = {"frankfurt": 35.0, "virginia": 110.0, "singapore": 230.0}


def build_primary(data_dir: Path, database_url: str | None):
    """A migrated primary (sync API on) in Frankfurt, its own row registered."""
    from flask_migrate import upgrade

    from app import create_app
    from app.config import load_settings
    from app.services import configuration
    from app.services.sync import primary

    env = {"DATA_DIR": str(data_dir), "SECRET_KEY": "bench-secret-key-0123456789", "LOG_LEVEL": "WARNING",
           "ENABLE_SYNC_API": "true", "SYNC_SHARED_SECRET": "bench-cluster-secret-0123456789",
           "INSTANCE_NAME": "fra-1", "INSTANCE_LOCATION": "frankfurt",
           "INSTANCE_LATITUDE": "50.11", "INSTANCE_LONGITUDE": "8.68"}
    if database_url:
        from sqlalchemy import create_engine, text

        engine = create_engine(database_url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        env["DATABASE_URL"] = database_url
    app = create_app(settings=load_settings(env))
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        configuration.ensure_initialized()
        primary.register_self()
    return app


def seed(app, endpoints: int, now: datetime) -> dict:
    """Bulk-insert the dependents, the endpoints and their results; returns
    counts and seconds taken."""
    from sqlalchemy import insert, text

    from app.extensions import db
    from app.models import Endpoint, MonitoringInstance
    from app.services import configuration

    started = time.perf_counter()
    with app.app_context():
        instances = {"frankfurt": configuration.instance_id(), **{k: v[0] for k, v in MEMBERS.items()}}
        db.session.execute(insert(MonitoringInstance.__table__), [{
            "id": instance_id, "name": f"{location[:3]}-1", "location": location, "role": "dependent",
            "failover_order": 0, "status": "active", "last_heartbeat_at": now - timedelta(seconds=3),
            "registered_at": now - timedelta(days=2), "system_info": {"latitude": lat, "longitude": lon},
            "connection_info": {}, "config_version": 0,
        } for location, (instance_id, lat, lon) in MEMBERS.items()])
        db.session.execute(insert(Endpoint.__table__), [{
            "id": n + 1, "name": f"service-{n:04d}", "check_type": "http",
            "target": f"http://service-{n:04d}.example.test/health", "options": {},
            "interval_seconds": INTERVAL_SECONDS, "timeout_seconds": 10.0, "failure_threshold": 1,
            "success_threshold": 1, "is_paused": False, "created_at": now - timedelta(days=2),
            "updated_at": now - timedelta(minutes=5), "status": "UP", "status_changed_at": now - timedelta(days=1),
            "consecutive_failures": 0, "consecutive_successes": 1, "last_checked_at": now - timedelta(seconds=30),
            "last_response_time_ms": 40.0, "next_check_at": 0.0,
        } for n in range(endpoints)])
        db.session.commit()
        steps = HOURS * 3600 // INTERVAL_SECONDS
        postgresql = db.engine.dialect.name == "postgresql"
        # Generated in SQL (minutes faster than rows built in Python), oldest
        # first, endpoint after endpoint, as a running instance stores them.
        # Singapore fails 1 check in 50; response times vary by +-25 %.
        members = " UNION ALL ".join(
            f"SELECT {j} AS j, '{instance_id}' AS id, '{location}' AS loc, {TYPICAL_MS[location]} AS ms"
            for j, (location, instance_id) in enumerate(instances.items()))
        if postgresql:
            steps_from = "generate_series(0, :last) AS k(i)"
            at = "CAST(:start AS timestamp) + (k.i * 60 + e.id % 60) * interval '1 second'"
            prefix, order = "", " ORDER BY k.i, e.id, m.j"
        else:
            steps_from = "k"
            at = "strftime('%Y-%m-%d %H:%M:%f000', :start, '+' || (k.i * 60 + e.id % 60) || ' seconds')"
            prefix = "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < :last) "
            order = ""  # CROSS JOIN keeps this nesting order on SQLite
        failed = "(m.j = 2 AND (k.i * 7919 + e.id * 104729) % 50 = 0)"
        db.session.execute(text(
            f"{prefix}INSERT INTO response_times (result_id, endpoint_id, instance_id, location, checked_at, is_ok, "
            "status, response_time_ms, failure_reason, check_type, check_metadata, synced_at) "
            f"SELECT 'bench-' || (k.i * {endpoints * 3} + e.id * 3 + m.j), e.id, m.id, m.loc, {at}, NOT {failed}, "
            f"CASE WHEN {failed} THEN 'DOWN' ELSE 'UP' END, "
            f"CASE WHEN {failed} THEN NULL ELSE m.ms * (0.8 + 0.5 * ((k.i * 31 + e.id * 17) % 100) / 100.0) END, "
            f"CASE WHEN {failed} THEN 'connect timeout after 10 s' END, 'http', '{{}}', {at} "
            f"FROM {steps_from} CROSS JOIN endpoints e CROSS JOIN ({members}) AS m{order}"
        ), {"start": (now - timedelta(seconds=steps * INTERVAL_SECONDS)).replace(tzinfo=None).isoformat(sep=" "),
            "last": steps - 1})
        db.session.commit()
        results = db.session.execute(text("SELECT COUNT(*) FROM response_times")).scalar_one()
        analyze_after_seeding(db)
        db.session.remove()
    return {"results": results, "seconds": round(time.perf_counter() - started, 1)}


def time_map(client, requests: int) -> dict:
    """Whole page and live refresh, ``requests`` times each."""
    figures = {}
    for name, headers in (("page", {}), ("refresh", {"HX-Request": "true"})):
        times = []
        for _ in range(requests):
            elapsed, response = timed_get(client, "/map", headers=headers)
            assert response.status_code == 200, response.status_code
            times.append(elapsed)
        figures[name] = {**summary(times), "bytes": len(response.data)}
    html = client.get("/map").get_data(as_text=True)
    # Every instance shows figures for its hour and day: they were counted, not left out.
    assert html.count("Last day: ") == 3 and "no checks" not in html, "an instance without figures"
    return figures


def measure(endpoints: int = 1000, requests: int = 10, state: str = "both", database_url: str | None = None) -> dict:
    """Seed, then time the map in each state asked for; the report."""
    data_dir = Path(tempfile.mkdtemp(prefix="bench-map-page-"))
    try:
        app = build_primary(data_dir, database_url)
        now = datetime.now(timezone.utc)
        seeded = seed(app, endpoints, now)
        seeded["counts"] = count_seeded_results(app)
        print(f"seeded {endpoints} endpoints x 3 instances: {seeded}", file=sys.stderr)
        client = signed_in_client(app)
        report = {"benchmark": "map_page", "at": now.isoformat(timespec="seconds"), "endpoints": endpoints,
                  "instances": 3, "hours_of_results": HOURS, "seeded": seeded,
                  "machine": f"{platform.machine()}, {platform.python_version()}"}
        for name in wanted(state):
            if name == "rolled-up":
                report["clock_job"] = run_clock_job(app)
            cpu, load = time.process_time(), os.getloadavg()[0]
            report[name] = {**time_map(client, requests), "statements": count_statements(app, client, "/map"),
                            "load_average": round(load, 1)}
            print(f"{name}: {report[name]} ({time.process_time() - cpu:.1f} s CPU)", file=sys.stderr)
        report["database"] = close_database(app)
        return report
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def figures(quick: bool = False) -> list[dict]:
    """The map's server time in both states, SQLite, 1,000 endpoints x 3 instances."""
    report = measure(requests=3 if quick else 10)
    rows = []
    for name in wanted("both"):
        for part, label in (("page", "whole page"), ("refresh", "live refresh")):
            got = report[name][part]
            rows.append({"figure": f"/map {label}, 1,000 endpoints x 3 instances, a day, {name} (SQLite)",
                         "target": "< 300 ms server time",
                         "measured": server_time(got, report[name]["load_average"]),
                         "passed": got["median_ms"] < 300})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=10, help="renders of each figure")
    parser.add_argument("--state", choices=CHOICES, default="both", help="see bench/states.py")
    parser.add_argument("--database-url", help="a PostgreSQL database to use (its schema is wiped)")
    args = parser.parse_args(argv)
    report = measure(args.endpoints, args.requests, args.state, args.database_url)
    write_report(report, f"map-page-{report['database']}-{report['at'].replace(':', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
