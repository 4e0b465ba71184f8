"""Consensus uptime (``consensus.uptimes``) over a long consensus history.

    .venv/bin/python -m bench.consensus_uptime
    .venv/bin/python -m bench.consensus_uptime --database-url postgresql://postgres@127.0.0.1:5432/bench

Every endpoint gains a regular ``aggregated_results`` row every 5 minutes
(``consensus.CADENCE``, kept as long as raw results) and a change row at
each change of its consensus (kept 2 years), so the status in force when a
window starts must be found without reading the history before it.

1. Creates a fresh database (SQLite in a temporary ``DATA_DIR`` unless
   ``--database-url`` names a PostgreSQL database, whose public schema is
   dropped and re-created) and migrates it.
2. ``--endpoints`` (200) endpoints with ``--days`` (60) days of history,
   written by SQL: a regular row every 5 minutes, and a change every 2
   hours (UP and DOWN in turn) until 10 days ago, none since (UP). 17,280
   regular rows and 600 changes per endpoint: 3.6 million rows for 200.
3. Times ``--requests`` calls of ``consensus.uptimes`` as the dashboard
   and the API make it (every endpoint, 24 h) and as the endpoint page
   does (one endpoint; 24 h, 7 d and 30 d), with the uptimes they found.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.dashboard import build_app, summary
from bench.scratch import close_database

CHANGE_EVERY_STEPS = 24  # 2 hours of 5-minute steps
QUIET_DAYS = 10


def seed(app, endpoints: int, days: int, now: datetime) -> dict:
    """Endpoints and their aggregated history, generated in SQL."""
    from sqlalchemy import insert, text

    from app.extensions import db
    from app.models import Endpoint

    started = time.perf_counter()
    steps = days * 288
    quiet_from = steps - QUIET_DAYS * 288
    start = (now - timedelta(days=days)).replace(tzinfo=None)
    with app.app_context():
        db.session.execute(insert(Endpoint.__table__), [{
            "id": n + 1, "name": f"service-{n:04d}", "check_type": "http",
            "target": f"http://service-{n:04d}.example.test/health", "options": {}, "interval_seconds": 60,
            "timeout_seconds": 10.0, "failure_threshold": 1, "success_threshold": 1, "is_paused": False,
            "created_at": now - timedelta(days=days + 1), "updated_at": now, "status": "UP",
            "status_changed_at": now - timedelta(days=QUIET_DAYS), "consecutive_failures": 0,
            "consecutive_successes": 1, "next_check_at": 0.0,
        } for n in range(endpoints)])
        db.session.commit()
        postgresql = db.engine.dialect.name == "postgresql"
        if postgresql:
            steps_sql = "generate_series(0, :last) AS k(i)"
            at = "CAST(:start AS timestamp) + (k.i * 300 + e.id) * interval '1 second'"
        else:
            steps_sql = "k"
            at = "strftime('%Y-%m-%d %H:%M:%f000', :start, '+' || (k.i * 300 + e.id) || ' seconds')"
        change = f"(k.i % {CHANGE_EVERY_STEPS} = 0 AND k.i < :quiet_from) OR k.i = :quiet_from"
        down = f"(k.i / {CHANGE_EVERY_STEPS}) % 2 = 1 AND k.i < :quiet_from"
        cte = "" if postgresql else "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < :last) "
        # Both a regular and a change row where the consensus changes, as the pass writes them.
        for is_change, where in (("FALSE" if postgresql else "0", "1 = 1"), ("TRUE" if postgresql else "1", change)):
            db.session.execute(text(
                f"{'' if postgresql else cte}INSERT INTO aggregated_results (endpoint_id, computed_at, consensus, "
                "locations_up, locations_down, locations_total, is_change, details) "
                f"{cte if postgresql else ''}SELECT e.id, {at}, CASE WHEN {down} THEN 'DOWN' ELSE 'UP' END, 3, 0, 3, "
                f"{is_change}, '{{}}' FROM endpoints e CROSS JOIN {steps_sql} WHERE {where}"
            ), {"start": start.isoformat(sep=" "), "last": steps - 1, "quiet_from": quiet_from})
            db.session.commit()
        if postgresql:
            db.session.execute(text("ANALYZE"))
            db.session.commit()
        rows = db.session.execute(text("SELECT COUNT(*) FROM aggregated_results")).scalar_one()
        changes = db.session.execute(text("SELECT COUNT(*) FROM aggregated_results WHERE is_change")).scalar_one()
        db.session.remove()
    return {"aggregated_rows": rows, "change_rows": changes, "seconds": round(time.perf_counter() - started, 1)}


def timed(app, requests: int, endpoint_ids: list[int], spans: tuple[timedelta, ...], now: datetime) -> dict:
    from app.extensions import db
    from app.services import consensus

    times = []
    with app.app_context():
        for _ in range(requests):
            started = time.perf_counter()
            found = consensus.uptimes(endpoint_ids, now, spans=spans)
            times.append((time.perf_counter() - started) * 1000.0)
            db.session.remove()
    first = found[endpoint_ids[0]]
    return {**summary(times), "uptime_of_first": {str(span): None if value is None else round(value, 4)
                                                  for span, value in first.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--database-url", help="a PostgreSQL database to use (its schema is wiped)")
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="bench-consensus-uptime-"))
    try:
        app = build_app(data_dir, args.database_url, primary=False)
        now = datetime.now(timezone.utc)
        seeded = seed(app, args.endpoints, args.days, now)
        print(f"seeded: {seeded}", file=sys.stderr)
        ids = list(range(1, args.endpoints + 1))
        day = timedelta(hours=24)
        report = {
            "benchmark": "consensus_uptime", "endpoints": args.endpoints, "days": args.days, "seeded": seeded,
            "every_endpoint_24h": timed(app, args.requests, ids, (day,), now),
            "one_endpoint_24h_7d_30d": timed(app, args.requests, [1], (day, timedelta(days=7), timedelta(days=30)),
                                             now),
        }
        report["database"] = close_database(app)
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
