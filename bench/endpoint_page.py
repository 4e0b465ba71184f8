"""Endpoint page server time with 30 days of history from 3 locations, in both states.

    .venv/bin/python -m bench.endpoint_page
    .venv/bin/python -m bench.endpoint_page --state never-rolled-up
    .venv/bin/python -m bench.endpoint_page --database-url postgresql://postgres@127.0.0.1:5432/bench

1. Creates a fresh database (SQLite in a temporary ``DATA_DIR`` unless
   ``--database-url`` names a PostgreSQL database, whose public schema is
   dropped and re-created) and migrates it.
2. Bulk-inserts ``--endpoints`` endpoints (60 s interval, created 31 days
   ago), each with 30 days of results from 3 locations (this instance,
   "virginia" and "singapore"): 129,600 per endpoint. Singapore fails 1 %
   of its checks at random and for 2 hours 10 days ago; virginia and
   singapore both for 20 minutes 3 days ago. The consensus history that
   goes with it: a status change (and an ``aggregated_results`` change
   row) for each PARTIAL and DOWN stretch, about 900 per endpoint and
   month, and the regular ``aggregated_results`` row every 5 minutes.
   Then counts the results per hour and day as storing them would have
   (``bench.states``).
3. In each state of ``--state`` (see ``bench.states``: never rolled up,
   with all 30 days of raw results; then after the clock's job, which
   prunes raw results past the default 7 days): signs in with Flask's
   test client (in process: server time, without network or a browser)
   and times ``--requests`` GETs of the page of endpoint 1 in each range
   (``?range=1h`` to ``30d``), of the chart panel alone for 30 days (the
   HTMX range switch), and of the live status poll when nothing changed
   (204). Counts the SQL statements of one 30-day page.
4. Prints median and p95 of each and writes them as JSON to ``bench/results/``.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.dashboard import build_app, signed_in_client, summary, timed_get
from bench.scratch import analyze_after_seeding, close_database, server_time, write_report
from bench.states import CHOICES, count_seeded_results, run_clock_job, wanted

INTERVAL_SECONDS = 60
DAYS = 30
LOCATIONS = {"virginia": "5f0c2a6e-0d7a-4c47-9d54-6a1f3a0b7c11", "singapore": "7d1e3b7f-1e8b-4d58-8e65-7b2f4b1c8d22"}
TYPICAL_MS = {"frankfurt": 35.0, "virginia": 110.0, "singapore": 230.0}


def _changes(endpoint_id: int, stretches: list[tuple[datetime, datetime, str]], start: datetime) -> tuple[list, list]:
    """Status changes and aggregated change rows for PARTIAL / DOWN stretches
    between UP (the first change: PENDING to UP at ``start``)."""
    changes, aggregated = [], []
    previous = "PENDING"
    moments = [(start, "UP")]
    for begin, end, status in stretches:
        moments += [(begin, status), (end, "UP")]
    for at, status in moments:
        changes.append({"endpoint_id": endpoint_id, "from_status": previous, "to_status": status, "changed_at": at,
                        "reason": None, "alert_event": None})
        aggregated.append({"endpoint_id": endpoint_id, "computed_at": at, "consensus": status, "locations_up": 3,
                           "locations_down": 0, "locations_total": 3, "is_change": True, "details": {}})
        previous = status
    return changes, aggregated


def seed(app, endpoints: int, now: datetime) -> dict:
    """Bulk-insert endpoints, results from 3 locations, location states and
    the consensus history; returns counts and seconds taken."""
    from sqlalchemy import insert

    from app.extensions import db
    from app.models import AggregatedResult, Endpoint, LocationStatus, ResponseTime, StatusChange
    from app.services import configuration

    started = time.perf_counter()
    rng = random.Random(7)
    start = now - timedelta(days=DAYS)
    steps = DAYS * 86400 // INTERVAL_SECONDS
    counts = {"results": 0, "status_changes": 0, "aggregated_results": 0}
    with app.app_context():
        own_id = configuration.instance_id()
        instances = {"frankfurt": own_id, **LOCATIONS}
        db.session.execute(insert(Endpoint.__table__), [{
            "id": n + 1, "name": f"service-{n:03d}", "check_type": "http",
            "target": f"http://service-{n:03d}.example.test/health", "options": {},
            "interval_seconds": INTERVAL_SECONDS, "timeout_seconds": 10.0, "failure_threshold": 1,
            "success_threshold": 1, "is_paused": False, "created_at": now - timedelta(days=DAYS + 1),
            "updated_at": now - timedelta(seconds=30), "status": "UP", "status_changed_at": now - timedelta(days=3),
            "consecutive_failures": 0, "consecutive_successes": 1, "last_checked_at": now - timedelta(seconds=30),
            "last_response_time_ms": 40.0, "next_check_at": 0.0, "locations_voting": 3, "locations_up": 3,
        } for n in range(endpoints)])
        db.session.execute(insert(LocationStatus.__table__), [{
            "endpoint_id": n + 1, "instance_id": instance_id, "location": location, "status": "UP",
            "consecutive_failures": 0, "consecutive_successes": 1, "last_checked_at": now - timedelta(seconds=30),
            "last_is_ok": True, "last_response_time_ms": TYPICAL_MS[location], "updated_at": now,
        } for n in range(endpoints) for location, instance_id in instances.items()])
        db.session.commit()
        outage = (now - timedelta(days=10), now - timedelta(days=10) + timedelta(hours=2))
        down = (now - timedelta(days=3), now - timedelta(days=3) + timedelta(minutes=20))
        for n in range(endpoints):
            chunk, stretches = [], []
            for step in range(steps):
                at = start + timedelta(seconds=step * INTERVAL_SECONDS + n % INTERVAL_SECONDS)
                flaky = rng.random() < 0.01
                if flaky and not (outage[0] <= at < outage[1]) and not (down[0] <= at < down[1]):
                    stretches.append((at, at + timedelta(seconds=INTERVAL_SECONDS), "PARTIAL"))
                for location, instance_id in instances.items():
                    ok = not ((location == "singapore" and (flaky or outage[0] <= at < outage[1]))
                              or (location != "frankfurt" and down[0] <= at < down[1]))
                    chunk.append({
                        "result_id": str(uuid.UUID(int=rng.getrandbits(128))), "endpoint_id": n + 1,
                        "instance_id": instance_id, "location": location, "checked_at": at, "is_ok": ok,
                        "status": "UP" if ok else "DOWN",
                        "response_time_ms": TYPICAL_MS[location] * rng.uniform(0.8, 1.3) if ok else None,
                        "failure_reason": None if ok else "connect timeout after 10 s", "check_type": "http",
                        "check_metadata": {}, "synced_at": at,
                    })
                if len(chunk) >= 30000:
                    db.session.execute(insert(ResponseTime.__table__), chunk)
                    counts["results"] += len(chunk)
                    chunk = []
            if chunk:
                db.session.execute(insert(ResponseTime.__table__), chunk)
                counts["results"] += len(chunk)
            stretches += [(outage[0], outage[1], "PARTIAL"), (down[0], down[1], "DOWN")]
            changes, aggregated = _changes(n + 1, sorted(stretches), start)
            cadence = [{"endpoint_id": n + 1, "computed_at": start + timedelta(minutes=5 * i), "consensus": "UP",
                        "locations_up": 3, "locations_down": 0, "locations_total": 3, "is_change": False,
                        "details": {}} for i in range(DAYS * 288)]
            db.session.execute(insert(StatusChange.__table__), changes)
            db.session.execute(insert(AggregatedResult.__table__), aggregated + cadence)
            counts["status_changes"] += len(changes)
            counts["aggregated_results"] += len(aggregated) + len(cadence)
            db.session.commit()
        analyze_after_seeding(db)
    return {**counts, "seconds": round(time.perf_counter() - started, 1)}


def count_statements(app, client, url: str) -> int:
    from sqlalchemy import event

    from app.extensions import db

    seen = []
    with app.app_context():
        engine = db.engine

    def note(*_):
        seen.append(1)

    event.listen(engine, "before_cursor_execute", note)
    try:
        client.get(url).get_data()
    finally:
        event.remove(engine, "before_cursor_execute", note)
    return len(seen)


def time_pages(app, client, requests: int) -> dict:
    """Each range's page, the 30-day chart panel, the unchanged poll."""
    figures = {}
    for range_key in ("1h", "24h", "7d", "30d"):
        url = f"/endpoints/1?range={range_key}"
        times = []
        for _ in range(requests):
            elapsed, response = timed_get(client, url)
            assert response.status_code == 200, response.status_code
            times.append(elapsed)
        figures[f"page_{range_key}"] = {**summary(times), "bytes": len(response.data)}
    times = []
    for _ in range(requests):
        elapsed, response = timed_get(client, "/endpoints/1?range=30d&part=chart", headers={"HX-Request": "true"})
        assert response.status_code == 200
        times.append(elapsed)
    figures["chart_panel_30d"] = {**summary(times), "bytes": len(response.data)}
    html = client.get("/endpoints/1").get_data(as_text=True)
    poll = re.search(r'id="endpoint-status"[^>]*hx-get="([^"]+)"', html, re.S).group(1).replace("&amp;", "&")
    times = []
    for _ in range(requests):
        elapsed, response = timed_get(client, poll, headers={"HX-Request": "true"})
        assert response.status_code == 204, response.status_code
        times.append(elapsed)
    figures["status_poll_unchanged"] = summary(times)
    figures["statements_page_30d"] = count_statements(app, client, "/endpoints/1?range=30d")
    figures["load_average"] = round(os.getloadavg()[0], 1)
    return figures


def measure(endpoints: int = 10, requests: int = 20, state: str = "both", database_url: str | None = None) -> dict:
    """Seed, then time the page in each state asked for; the report."""
    data_dir = Path(tempfile.mkdtemp(prefix="bench-endpoint-page-"))
    try:
        app = build_app(data_dir, database_url, primary=False)
        now = datetime.now(timezone.utc)
        seeded = seed(app, endpoints, now)
        seeded["counts"] = count_seeded_results(app)
        print(f"seeded {endpoints} endpoints: {seeded}", file=sys.stderr)
        client = signed_in_client(app)
        report = {"benchmark": "endpoint_page", "at": now.isoformat(timespec="seconds"), "endpoints": endpoints,
                  "locations": 3, "days": DAYS, "seeded": seeded,
                  "machine": f"{platform.machine()}, {platform.python_version()}"}
        for name in wanted(state):
            if name == "rolled-up":
                report["clock_job"] = run_clock_job(app)
                print(f"clock job: {report['clock_job']}", file=sys.stderr)
            report[name] = time_pages(app, client, requests)
            print(f"{name}: {report[name]}", file=sys.stderr)
        report["database"] = close_database(app)
        return report
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def figures(quick: bool = False) -> list[dict]:
    """The 30-day endpoint page's server time in both states, SQLite."""
    report = measure(endpoints=1 if quick else 10, requests=5 if quick else 20)
    rows = []
    for name in wanted("both"):
        got = report[name]["page_30d"]
        rows.append({"figure": f"endpoint page, 30 days from 3 locations, {name} (SQLite)",
                     "target": "< 200 ms server time",
                     "measured": server_time(got, report[name]["load_average"]),
                     "passed": got["median_ms"] < 200})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--requests", type=int, default=20, help="renders of each figure")
    parser.add_argument("--state", choices=CHOICES, default="both", help="see bench/states.py")
    parser.add_argument("--database-url", help="a PostgreSQL database to use (its schema is wiped)")
    args = parser.parse_args(argv)
    report = measure(args.endpoints, args.requests, args.state, args.database_url)
    write_report(report, f"endpoint-page-{report['database']}-{report['at'].replace(':', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
