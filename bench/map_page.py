"""Location map server time with 1,000 endpoints checked from 3 instances for a day.

    .venv/bin/python -m bench.map_page
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
   instance's checks fail.
3. Raw only (never rolled up: a fresh upgrade, or the clock's roll-up job
   not running): times ``--requests`` GETs of ``/map`` (the whole page)
   and of its live refresh (``HX-Request``: markers and regions).
4. Rolls every finished hour up as the clock's job does (in its steps of
   6 hours; timed and reported, not part of the page figures), then times
   the same requests again.
5. Prints median and p95 of each, with the statements of one refresh, and
   writes them as JSON to ``bench/results/``.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.dashboard import RESULTS_DIR, ROOT, signed_in_client, summary, timed_get
from bench.endpoint_page import count_statements, roll_up_all

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
        if db.engine.dialect.name == "postgresql":
            db.session.execute(db.text("ANALYZE"))
            db.session.commit()
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=10, help="renders of each figure")
    parser.add_argument("--database-url", help="a PostgreSQL database to use (its schema is wiped)")
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="bench-map-page-"))
    try:
        app = build_primary(data_dir, args.database_url)
        now = datetime.now(timezone.utc)
        seeded = seed(app, args.endpoints, now)
        print(f"seeded {args.endpoints} endpoints x 3 instances: {seeded}", file=sys.stderr)
        client = signed_in_client(app)
        raw_only = time_map(client, args.requests)
        raw_statements = count_statements(app, client, "/map")
        print(f"raw only: {raw_only}", file=sys.stderr)
        rolled = roll_up_all(app, datetime.now(timezone.utc))
        print(f"rolled up: {rolled}", file=sys.stderr)
        rolled_up = time_map(client, args.requests)
        rolled_statements = count_statements(app, client, "/map")

        with app.app_context():
            from app.extensions import db

            dialect = db.engine.dialect.name
            db.engine.dispose()
        report = {
            "benchmark": "map_page", "at": now.isoformat(timespec="seconds"), "database": dialect,
            "endpoints": args.endpoints, "instances": 3, "hours_of_results": HOURS, "seeded": seeded,
            "machine": f"{platform.machine()}, {platform.python_version()}",
            "raw_only": {**raw_only, "statements": raw_statements}, "roll_up": rolled,
            "rolled_up": {**rolled_up, "statements": rolled_statements},
        }
        print(json.dumps(report, indent=2))
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = RESULTS_DIR / f"map-page-{dialect}-{now:%Y%m%dT%H%M%S}.json"
        out.write_text(json.dumps(report, indent=2))
        print(f"written to {out.relative_to(ROOT)}", file=sys.stderr)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
