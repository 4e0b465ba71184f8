"""Dashboard server time: the matrix of endpoints x locations, a page at a
time, after a day of results, never rolled up and after the clock's job.

    .venv/bin/python -m bench.dashboard --endpoints 1000 --requests 30
    .venv/bin/python -m bench.dashboard --endpoints 1000 --state never-rolled-up
    .venv/bin/python -m bench.dashboard --endpoints 1000 --locations 10 --minutes 15
    .venv/bin/python -m bench.dashboard --endpoints 20000 --locations 3 --minutes 20 --polls 10
    .venv/bin/python -m bench.dashboard --database-url postgresql://postgres@127.0.0.1:5432/bench

1. Creates a fresh database (SQLite in a temporary ``DATA_DIR`` unless
   ``--database-url`` names a PostgreSQL database, whose public schema is
   dropped and re-created), migrates it and bulk-inserts ``--endpoints``
   endpoints (a quarter of them HTTPS with certificate metadata, 2 % DOWN
   everywhere; with several locations 3 % PARTIAL: failing at one
   location) with ``--minutes`` of results (default a day) at a 60 s
   interval from each of ``--locations`` locations (this instance and, on
   a primary, registered dependents reporting every 5 s): the last hour
   built row by row as each location sees each endpoint, the rest
   generated in SQL (1 check in 500 failing). Each location's state of
   each endpoint (``location_status``) and a consensus history
   (``aggregated_results``: UP two days ago, DOWN or PARTIAL an hour ago).
   Then counts the results per hour and day as storing them would have
   (``bench.states``).
2. Signs in with Flask's test client (in process: the figures are server
   time, without network or a browser) and renders the dashboard once
   (reported as the first render: a fresh process just after seeding).
3. In each state of ``--state`` (see ``bench.states``: never rolled up,
   then after the clock's job), page: ``--requests`` GETs of ``/`` (the
   first page: 100 rows, worst first, each with a cell per location,
   consensus uptime, heartbeat bar, certificate), each timed; then
   ``--requests`` / 3 of each other view: the middle page by name,
   grouped, and filtered by a location's status.
4. Live refresh, in each state: every location reports on every endpoint
   once (the seeded states would have gone stale by now), then
   ``--polls`` polls 5 s apart, as the browser makes them; before each,
   every location reports the next poll interval's worth of endpoints in
   turn (endpoints / 60 s * 5 s each: 83 for 1,000), stored and voted on
   as the check job and the sync API do, and the poll sends back only the
   page's changed rows. Then ``--requests`` polls when nothing changed (204).
5. Prints median and p95 of each and writes them as JSON to ``bench/results/``.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.scratch import ROOT, analyze_after_seeding, close_database, server_time, write_report

INTERVAL_SECONDS = 60
POLL_SECONDS = 5


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


class Timing(float):
    """Server time of one request in ms (wall clock), with the CPU time this
    process spent on it (``cpu_ms``): on a machine shared with other work
    the CPU time says what the request costs, the wall clock what it took."""

    cpu_ms: float = 0.0


def summary(values_ms):
    figures = {"median_ms": round(statistics.median(values_ms), 1), "p95_ms": round(percentile(values_ms, 0.95), 1),
               "min_ms": round(min(values_ms), 1), "max_ms": round(max(values_ms), 1), "n": len(values_ms)}
    cpu = [v.cpu_ms for v in values_ms if isinstance(v, Timing)]
    if cpu:
        figures["cpu_median_ms"] = round(statistics.median(cpu), 1)
        figures["cpu_p95_ms"] = round(percentile(cpu, 0.95), 1)
    return figures


def build_app(data_dir: Path, database_url: str | None, *, primary: bool):
    from flask_migrate import upgrade

    from app import create_app
    from app.config import load_settings
    from app.services import configuration

    env = {"DATA_DIR": str(data_dir), "SECRET_KEY": "bench-secret-key-0123456789", "LOG_LEVEL": "WARNING",
           "INSTANCE_NAME": "bench-0", "INSTANCE_LOCATION": "location-00"}
    if primary:
        env.update(ENABLE_SYNC_API="true", SYNC_SHARED_SECRET="bench-cluster-secret-0123456789")
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
    return app


class Fleet:
    """The seeded endpoints and locations, and what each location sees."""

    def __init__(self, endpoints: int, locations: list[tuple[str, str]]):
        self.endpoints = endpoints
        self.locations = locations  # (instance id, location), this instance first

    def down(self, n: int) -> bool:
        return n % 50 == 0

    def partial(self, n: int) -> bool:
        return len(self.locations) > 1 and n % 33 == 1

    def sees_ok(self, n: int, location_index: int) -> bool:
        """What a location sees of endpoint ``n`` (index from 0)."""
        return not (self.down(n) or (self.partial(n) and location_index == 1))

    def consensus(self, n: int) -> str:
        return "DOWN" if self.down(n) else "PARTIAL" if self.partial(n) else "UP"


def seed(app, fleet: Fleet, minutes: int, now: datetime) -> float:
    """Bulk-insert endpoints, members, states, consensus history and results;
    returns seconds taken."""
    from sqlalchemy import insert

    from app.extensions import db
    from app.models import AggregatedResult, Endpoint, LocationStatus, MonitoringInstance, ProbeState, ResponseTime

    started = time.perf_counter()
    rng = random.Random(7)
    rounds = minutes * 60 // INTERVAL_SECONDS
    count = len(fleet.locations)
    with app.app_context():
        if count > 1:
            db.session.execute(insert(MonitoringInstance.__table__), [
                {"id": instance_id, "name": f"bench-{k}", "location": location, "role": "dependent",
                 "failover_order": k, "status": "active", "last_heartbeat_at": now, "registered_at": now,
                 "system_info": {}, "connection_info": {}, "config_version": 0}
                for k, (instance_id, location) in enumerate(fleet.locations) if k > 0])
            db.session.execute(insert(ProbeState.__table__), [
                {"instance_id": instance_id, "heartbeat_interval": 5, "updated_at": now}
                for instance_id, _ in fleet.locations[1:]])
        rows, states, history = [], [], []
        for n in range(fleet.endpoints):
            https, status = n % 4 == 0, fleet.consensus(n)
            last = now - timedelta(seconds=n % INTERVAL_SECONDS)
            up = sum(1 for k in range(count) if fleet.sees_ok(n, k))
            rows.append({
                "id": n + 1, "name": f"service-{n:05d}", "check_type": "http",
                "target": f"{'https' if https else 'http'}://service-{n:05d}.example.test/health",
                "options": {}, "interval_seconds": INTERVAL_SECONDS, "timeout_seconds": 10.0,
                "failure_threshold": 1, "success_threshold": 1, "is_paused": False,
                "group_name": f"team-{n % 10}", "created_at": now - timedelta(days=2),
                "updated_at": now - timedelta(minutes=5), "status": status,
                "status_changed_at": now - timedelta(hours=1), "consecutive_failures": 0,
                "consecutive_successes": 0, "last_checked_at": last, "last_response_time_ms": 50.0,
                "last_failure_reason": None if status == "UP" else "HTTP 503", "next_check_at": 0.0,
                "locations_voting": count, "locations_up": up, "locations_down": count - up,
            })
            for k, (instance_id, location) in enumerate(fleet.locations):
                ok = fleet.sees_ok(n, k)
                states.append({"endpoint_id": n + 1, "instance_id": instance_id, "location": location,
                               "status": "UP" if ok else "DOWN", "consecutive_failures": 0 if ok else 1,
                               "consecutive_successes": 1 if ok else 0, "last_checked_at": last, "last_is_ok": ok,
                               "last_response_time_ms": 50.0 if ok else None,
                               "last_failure_reason": None if ok else "HTTP 503",
                               "updated_at": now - timedelta(minutes=5)})
            history.append({"endpoint_id": n + 1, "computed_at": now - timedelta(days=2), "consensus": "UP",
                            "locations_up": count, "locations_down": 0, "locations_total": count,
                            "is_change": True, "details": {}})
            if status != "UP":
                history.append({"endpoint_id": n + 1, "computed_at": now - timedelta(hours=1), "consensus": status,
                                "locations_up": up, "locations_down": count - up, "locations_total": count,
                                "is_change": True, "details": {}})
        for table, values in ((Endpoint.__table__, rows), (LocationStatus.__table__, states),
                              (AggregatedResult.__table__, history)):
            for start in range(0, len(values), 20000):
                db.session.execute(insert(table), values[start:start + 20000])
        db.session.commit()
        chunk = []
        recent = min(rounds, 60)  # the last hour, row by row: statuses as seen, certificates
        for n in range(fleet.endpoints):
            https, base_ms = n % 4 == 0, rng.uniform(20, 300)
            for k, (instance_id, location) in enumerate(fleet.locations):
                for i in range(recent):
                    at = now - timedelta(seconds=n % INTERVAL_SECONDS + i * INTERVAL_SECONDS)
                    ok = fleet.sees_ok(n, k)
                    metadata = {"httpStatus": 200 if ok else 503}
                    if https and i == 0:
                        metadata["certificateInfo"] = {"daysRemaining": 10 + n % 80, "subject": "CN=test"}
                    chunk.append({
                        "result_id": str(uuid.UUID(int=rng.getrandbits(128))), "endpoint_id": n + 1,
                        "instance_id": instance_id, "location": location, "checked_at": at, "is_ok": ok,
                        "status": "UP" if ok else "DOWN",
                        "response_time_ms": base_ms * rng.uniform(0.8, 1.3) if ok else None,
                        "failure_reason": None if ok else "HTTP 503", "check_type": "http",
                        "check_metadata": metadata, "synced_at": at,
                    })
                    if len(chunk) >= 20000:
                        db.session.execute(insert(ResponseTime.__table__), chunk)
                        chunk = []
        if chunk:
            db.session.execute(insert(ResponseTime.__table__), chunk)
        db.session.commit()
        if rounds > recent:
            _generate_older_results(fleet, recent, rounds, now)
        analyze_after_seeding(db)
    return time.perf_counter() - started


def _generate_older_results(fleet: Fleet, first: int, rounds: int, now: datetime) -> None:
    """Rounds ``first`` to ``rounds`` - 1 back from ``now`` of every
    endpoint and location, generated in SQL (minutes faster than rows built
    in Python): 1 check in 500 fails, response times 20 to 300 ms."""
    from app.extensions import db

    members = " UNION ALL ".join(f"SELECT {k} AS k, '{instance_id}' AS id, '{location}' AS loc"
                                 for k, (instance_id, location) in enumerate(fleet.locations))
    if db.engine.dialect.name == "postgresql":
        steps = "generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS s(i)"
        at = f"CAST(:now AS timestamp) - ((e.id - 1) % 60 + s.i * {INTERVAL_SECONDS}) * interval '1 second'"
        prefix = ""
    else:
        steps = "s"
        at = f"strftime('%Y-%m-%d %H:%M:%f000', :now, '-' || ((e.id - 1) % 60 + s.i * {INTERVAL_SECONDS}) || ' seconds')"
        prefix = "WITH RECURSIVE s(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM s WHERE i < :last) "
    failed = "((s.i * 7919 + e.id * 104729 + m.k * 31) % 500 = 0)"
    db.session.execute(db.text(
        f"{prefix}INSERT INTO response_times (result_id, endpoint_id, instance_id, location, checked_at, is_ok, "
        "status, response_time_ms, failure_reason, check_type, check_metadata, synced_at) "
        f"SELECT 'bench-' || (s.i * {fleet.endpoints * len(fleet.locations)} + e.id * {len(fleet.locations)} + m.k), "
        f"e.id, m.id, m.loc, {at}, NOT {failed}, CASE WHEN {failed} THEN 'DOWN' ELSE 'UP' END, "
        f"CASE WHEN {failed} THEN NULL ELSE 20 + (e.id * 37 + s.i * 13) % 280 END, "
        f"CASE WHEN {failed} THEN 'HTTP 503' END, 'http', '{{\"httpStatus\": 200}}', {at} "
        f"FROM {steps} CROSS JOIN endpoints e CROSS JOIN ({members}) AS m"
    ), {"now": now.replace(tzinfo=None).isoformat(sep=" "), "first": first, "last": rounds - 1})
    db.session.commit()


def signed_in_client(app):
    from app.services.accounts import create_user

    with app.app_context():
        create_user("bench@example.org", "benchmark password", is_admin=True)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"csrf_token": token, "email": "bench@example.org",
                                           "password": "benchmark password"})
    assert response.status_code == 302, response.status_code
    return client


def timed_get(client, url, **kwargs):
    started, cpu = time.perf_counter(), time.process_time()
    response = client.get(url, **kwargs)
    response.get_data()
    timing = Timing((time.perf_counter() - started) * 1000.0)
    timing.cpu_ms = (time.process_time() - cpu) * 1000.0
    return timing, response


def poll_url(html: str) -> str:
    return re.search(r'id="dashboard-poll"[^>]*hx-get="([^"]+)"', html, re.S).group(1).replace("&amp;", "&")


def report(app, fleet: Fleet, numbers: list[int]):
    """Every location reports on endpoints ``numbers`` (indexes from 0), as
    they see them: this instance's results as its check job stores them,
    the others' as the sync API stores a heartbeat."""
    from app.checks import CheckResult
    from app.extensions import db
    from app.services import consensus
    from app.services.results import record_results, result_row, store_results

    with app.app_context():
        for k, (instance_id, location) in enumerate(fleet.locations):
            outcomes = [(n + 1, CheckResult(is_ok=fleet.sees_ok(n, k), check_type="http",
                                            response_time_ms=random.uniform(20, 300) if fleet.sees_ok(n, k) else None,
                                            failure_reason=None if fleet.sees_ok(n, k) else "HTTP 503"))
                        for n in numbers]
            if k == 0:
                record_results(outcomes, instance_id=instance_id, location=location)
                continue
            rows = [{**result_row(eid, result, instance_id=instance_id, location=location), "synced_at": None}
                    for eid, result in outcomes]
            store_results(rows)
            consensus.ingest(rows, instance_id=instance_id, location=location, own=False)
            db.session.commit()
        db.session.remove()


def timed_views(client, urls: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        for url in urls:
            elapsed, response = timed_get(client, url)
            assert response.status_code == 200, (url, response.status_code)
            times.append(elapsed)
    return times


def time_state(app, client, fleet: Fleet, *, requests: int, polls: int) -> dict:
    """Page, other views, live refresh with and without changes: the figures of one state."""
    cpu_started, load = time.process_time(), os.getloadavg()[0]
    full = timed_views(client, ["/"], requests)
    middle = max(1, -(-fleet.endpoints // 100) // 2)
    others = {"by_name_middle_page": f"/?sort=name&page={middle}", "grouped": "/?sort=group",
              "location_status_down": "/?status=DOWN"}
    other_figures = {name: summary(timed_views(client, [url], max(3, requests // 3))) for name, url in others.items()}

    changed_per_poll = max(1, fleet.endpoints * POLL_SECONDS // INTERVAL_SECONDS)
    # One round of every location on every endpoint first, as if they had
    # been checking all along (the seeded states would go stale meanwhile).
    order = list(range(fleet.endpoints))
    for start in range(0, fleet.endpoints, 1000):
        report(app, fleet, order[start:start + 1000])
    url = poll_url(timed_get(client, "/")[1].get_data(as_text=True))
    fragments, fragment_bytes, fragment_rows, full_tables, unchanged = [], [], [], 0, []
    # Polls as the browser makes them, POLL_SECONDS apart; between two,
    # every location reports one poll interval's worth of endpoints.
    for poll in range(polls):
        started = time.monotonic()
        first = poll * changed_per_poll % fleet.endpoints
        report(app, fleet, (order + order)[first:first + changed_per_poll])
        elapsed, response = timed_get(client, url, headers={"HX-Request": "true"})
        if response.status_code == 204:
            unchanged.append(elapsed)
        else:
            assert response.status_code == 200, response.status_code
            html = response.get_data(as_text=True)
            fragments.append(elapsed)
            fragment_bytes.append(len(response.data))
            fragment_rows.append(html.count("<tr id="))
            full_tables += 'id="dashboard-table" hx-swap-oob' in html
            url = poll_url(html)
        time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - started)))
    for _ in range(requests):
        elapsed, response = timed_get(client, url, headers={"HX-Request": "true"})
        if response.status_code == 200:
            url = poll_url(response.get_data(as_text=True))
        else:
            unchanged.append(elapsed)
    return {
        "page": summary(full), **other_figures,
        "fragment_refresh": {**(summary(fragments) if fragments else {}),
                             "endpoints_reported_per_poll_per_location": changed_per_poll,
                             "median_rows_sent": int(statistics.median(fragment_rows)) if fragment_rows else 0,
                             "median_bytes": int(statistics.median(fragment_bytes)) if fragment_bytes else 0,
                             "whole_table_resent": full_tables},
        "fragment_refresh_nothing_changed": summary(unchanged) if unchanged else {},
        "load_average": round(load, 1), "load_average_after": round(os.getloadavg()[0], 1),
        "benchmark_cpu_seconds": round(time.process_time() - cpu_started, 1),
    }


def measure(endpoints: int = 1000, locations: int = 1, minutes: int = 24 * 60, requests: int = 30,
            polls: int = 20, state: str = "both", database_url: str | None = None) -> dict:
    """Seed, then time the dashboard in each state asked for; the report."""
    from bench.states import count_seeded_results, run_clock_job, wanted

    data_dir = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    try:
        app = build_app(data_dir, database_url, primary=locations > 1)
        with app.app_context():
            from app.services import configuration

            own_id = configuration.instance_id()
        fleet = Fleet(endpoints, [(own_id, "location-00")] + [
            (f"00000000-0000-4000-8000-{k:012d}", f"location-{k:02d}") for k in range(1, locations)])
        now = datetime.now(timezone.utc)
        seed_seconds = seed(app, fleet, minutes, now)
        counts = count_seeded_results(app)
        rows = endpoints * locations * (minutes * 60 // INTERVAL_SECONDS)
        print(f"seeded {endpoints} endpoints x {locations} locations and {rows} results "
              f"in {seed_seconds:.1f} s, counted: {counts}", file=sys.stderr)
        client = signed_in_client(app)

        first_ms, response = timed_get(client, "/")
        assert response.status_code == 200
        html = response.get_data(as_text=True)
        page_bytes, page_rows = len(response.data), html.count("<tr id=")
        assert html.count('class="num cell ') == page_rows * locations, "a cell per location"
        report_ = {
            "benchmark": "dashboard", "at": now.isoformat(timespec="seconds"),
            "endpoints": endpoints, "locations": locations, "results": rows, "minutes_of_results": minutes,
            "counted": counts, "machine": f"{platform.machine()}, {platform.python_version()}",
            "first_render_after_seeding_ms": round(first_ms, 1), "first_render_cpu_ms": round(first_ms.cpu_ms, 1),
            "page_rows": page_rows, "page_bytes": page_bytes,
        }
        for name in wanted(state):
            if name == "rolled-up":
                report_["clock_job"] = run_clock_job(app)
            report_[name] = time_state(app, client, fleet, requests=requests, polls=polls)
            print(f"{name}: page {report_[name]['page']}, refresh {report_[name]['fragment_refresh']}",
                  file=sys.stderr)
        report_["database"] = close_database(app)
        return report_
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def figures(quick: bool = False) -> list[dict]:
    """The dashboard's page and live refresh, 1,000 endpoints after a day of
    results, in both states (SQLite)."""
    from bench.states import wanted

    got = measure(requests=10 if quick else 30, polls=4 if quick else 20)
    rows = []
    for name in wanted("both"):
        state = got[name]
        rows.append({"figure": f"dashboard page, 1,000 endpoints, a day of results, {name} (SQLite)",
                     "target": "< 300 ms server time", "measured": server_time(state["page"], state["load_average"]),
                     "passed": state["page"]["median_ms"] < 300})
        refresh = state["fragment_refresh"] or state["fragment_refresh_nothing_changed"]
        rows.append({"figure": f"dashboard live refresh with changes, 1,000 endpoints, {name} (SQLite)",
                     "target": "< 100 ms server time", "measured": server_time(refresh, state["load_average"]),
                     "passed": refresh["median_ms"] < 100})
    return rows


def main(argv=None) -> int:
    from bench.states import CHOICES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--locations", type=int, default=1, help="this instance and N-1 registered dependents")
    parser.add_argument("--minutes", type=int, default=24 * 60, help="results seeded per endpoint and location")
    parser.add_argument("--requests", type=int, default=30, help="page renders and idle polls")
    parser.add_argument("--polls", type=int, default=20, help=f"polls with changes, {POLL_SECONDS} s apart")
    parser.add_argument("--state", choices=CHOICES, default="both", help="see bench/states.py")
    parser.add_argument("--database-url", help="a PostgreSQL database to use (its schema is wiped)")
    args = parser.parse_args(argv)
    figures_ = measure(args.endpoints, args.locations, args.minutes, args.requests, args.polls, args.state,
                       args.database_url)
    write_report(figures_, f"dashboard-{figures_['database']}-{args.endpoints}x{args.locations}-"
                           f"{figures_['at'].replace(':', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
