"""Dashboard server time with 1,000 endpoints and a day of results each.

    .venv/bin/python -m bench.dashboard --endpoints 1000 --requests 30
    .venv/bin/python -m bench.dashboard --database-url postgresql://postgres@127.0.0.1:5432/bench

1. Creates a fresh database (SQLite in a temporary ``DATA_DIR`` unless
   ``--database-url`` names a PostgreSQL database, whose public schema is
   dropped and re-created), migrates it and bulk-inserts ``--endpoints``
   endpoints (a quarter of them HTTPS with certificate metadata, 2 % down)
   with 24 hours of results each at a 60 s interval: 1,440 per endpoint.
2. Signs in with Flask's test client (in process: the figures are server
   time, without network or a browser) and renders the dashboard once to
   roll up the finished hours (reported as the first render).
3. Full page: ``--requests`` GETs of ``/``, each timed.
4. Fragment refresh: ``--polls`` polls 5 s apart, as the browser makes
   them; before each, one poll interval's worth of endpoints gets a new
   result (endpoints / 60 s * 5 s: 83 for 1,000 endpoints), and the poll
   sends back only the changed rows. Then ``--requests`` polls when nothing
   changed (204).
5. Prints median and p95 of each and writes them as JSON to ``bench/results/``.
"""
from __future__ import annotations

import argparse
import json
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
INTERVAL_SECONDS = 60
POLL_SECONDS = 5


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def summary(values_ms):
    return {"median_ms": round(statistics.median(values_ms), 1), "p95_ms": round(percentile(values_ms, 0.95), 1),
            "min_ms": round(min(values_ms), 1), "max_ms": round(max(values_ms), 1), "n": len(values_ms)}


def build_app(data_dir: Path, database_url: str | None):
    from flask_migrate import upgrade

    from app import create_app
    from app.config import load_settings
    from app.services import configuration

    env = {"DATA_DIR": str(data_dir), "SECRET_KEY": "bench-secret-key-0123456789", "LOG_LEVEL": "WARNING"}
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


def seed(app, endpoints: int, now: datetime) -> float:
    """Bulk-insert endpoints and a day of results; returns seconds taken."""
    from sqlalchemy import insert

    from app.extensions import db
    from app.models import Endpoint, ResponseTime

    started = time.perf_counter()
    rng = random.Random(7)
    per_endpoint = 24 * 3600 // INTERVAL_SECONDS
    with app.app_context():
        rows = []
        for n in range(endpoints):
            https = n % 4 == 0
            down = n % 50 == 0
            rows.append({
                "id": n + 1, "name": f"service-{n:04d}", "check_type": "http",
                "target": f"{'https' if https else 'http'}://service-{n:04d}.example.test/health",
                "options": {}, "interval_seconds": INTERVAL_SECONDS, "timeout_seconds": 10.0,
                "failure_threshold": 1, "success_threshold": 1, "is_paused": False,
                "group_name": f"team-{n % 10}", "created_at": now - timedelta(days=2),
                "updated_at": now - timedelta(minutes=5), "status": "DOWN" if down else "UP",
                "status_changed_at": now - timedelta(hours=1), "consecutive_failures": 0,
                "consecutive_successes": 0, "last_checked_at": now - timedelta(seconds=n % INTERVAL_SECONDS),
                "last_response_time_ms": 50.0, "last_failure_reason": "connection refused" if down else None,
                "next_check_at": 0.0,
            })
        db.session.execute(insert(Endpoint.__table__), rows)
        db.session.commit()
        chunk = []
        for n in range(endpoints):
            https, down, base_ms = n % 4 == 0, n % 50 == 0, rng.uniform(20, 300)
            for i in range(per_endpoint):
                at = now - timedelta(seconds=n % INTERVAL_SECONDS + i * INTERVAL_SECONDS)
                ok = not (down and i < 60) and rng.random() > 0.002
                metadata = {"httpStatus": 200 if ok else 503}
                if https and i == 0:
                    metadata["certificateInfo"] = {"daysRemaining": 10 + n % 80, "subject": "CN=test"}
                chunk.append({
                    "result_id": str(uuid.UUID(int=rng.getrandbits(128))), "endpoint_id": n + 1,
                    "instance_id": "bench", "location": "bench", "checked_at": at, "is_ok": ok,
                    "status": "UP" if ok else "DOWN", "response_time_ms": base_ms * rng.uniform(0.8, 1.3) if ok else None,
                    "failure_reason": None if ok else "HTTP 503", "check_type": "http", "check_metadata": metadata,
                    "synced_at": at,
                })
                if len(chunk) >= 20000:
                    db.session.execute(insert(ResponseTime.__table__), chunk)
                    chunk = []
        if chunk:
            db.session.execute(insert(ResponseTime.__table__), chunk)
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            db.session.execute(db.text("ANALYZE"))
            db.session.commit()
    return time.perf_counter() - started


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
    started = time.perf_counter()
    response = client.get(url, **kwargs)
    response.get_data()
    return (time.perf_counter() - started) * 1000.0, response


def poll_url(html: str) -> str:
    return re.search(r'id="dashboard-poll"[^>]*hx-get="([^"]+)"', html, re.S).group(1).replace("&amp;", "&")


def record_new_results(app, endpoint_ids):
    from app.checks import CheckResult
    from app.extensions import db
    from app.services.results import record_results

    with app.app_context():
        record_results([(eid, CheckResult(is_ok=True, check_type="http", response_time_ms=random.uniform(20, 300)))
                        for eid in endpoint_ids], instance_id="bench", location="bench")
        db.session.remove()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=30, help="full-page renders and idle polls")
    parser.add_argument("--polls", type=int, default=20, help=f"polls with changes, {POLL_SECONDS} s apart")
    parser.add_argument("--database-url", help="a PostgreSQL database to use (its schema is wiped)")
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    try:
        app = build_app(data_dir, args.database_url)
        now = datetime.now(timezone.utc)
        seed_seconds = seed(app, args.endpoints, now)
        rows = args.endpoints * 24 * 3600 // INTERVAL_SECONDS
        print(f"seeded {args.endpoints} endpoints and {rows} results in {seed_seconds:.1f} s", file=sys.stderr)
        client = signed_in_client(app)

        first_ms, response = timed_get(client, "/")
        assert response.status_code == 200
        page_bytes = len(response.data)

        full = []
        for _ in range(args.requests):
            elapsed, response = timed_get(client, "/")
            assert response.status_code == 200
            full.append(elapsed)

        changed_per_poll = max(1, args.endpoints * POLL_SECONDS // INTERVAL_SECONDS)
        ids = list(range(1, args.endpoints + 1))
        rng = random.Random(11)
        html = response.get_data(as_text=True)
        url = poll_url(html)
        fragments, fragment_bytes, fragment_rows, unchanged = [], [], [], []
        # Polls as the browser makes them, POLL_SECONDS apart; between two,
        # one interval's worth of endpoints gets a new result.
        for _ in range(args.polls):
            started = time.monotonic()
            record_new_results(app, rng.sample(ids, changed_per_poll))
            elapsed, response = timed_get(client, url, headers={"HX-Request": "true"})
            assert response.status_code == 200, response.status_code
            html = response.get_data(as_text=True)
            fragments.append(elapsed)
            fragment_bytes.append(len(response.data))
            fragment_rows.append(html.count("<tr id="))
            url = poll_url(html)
            time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - started)))
        for _ in range(args.requests):
            elapsed, response = timed_get(client, url, headers={"HX-Request": "true"})
            if response.status_code == 200:
                url = poll_url(response.get_data(as_text=True))
            else:
                unchanged.append(elapsed)

        with app.app_context():
            from app.extensions import db

            dialect = db.engine.dialect.name
            db.engine.dispose()
        figures = {
            "benchmark": "dashboard", "at": now.isoformat(timespec="seconds"), "database": dialect,
            "endpoints": args.endpoints, "results": rows, "machine": f"{platform.machine()}, {platform.python_version()}",
            "first_render_with_rollup_ms": round(first_ms, 1), "page_bytes": page_bytes,
            "full_page": summary(full),
            "fragment_refresh": {**summary(fragments), "rows_changed_per_poll": changed_per_poll,
                                 "median_rows_sent": int(statistics.median(fragment_rows)),
                                 "median_bytes": int(statistics.median(fragment_bytes))},
            "fragment_refresh_nothing_changed": summary(unchanged),
        }
        print(json.dumps(figures, indent=2))
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = RESULTS_DIR / f"dashboard-{dialect}-{now:%Y%m%dT%H%M%S}.json"
        out.write_text(json.dumps(figures, indent=2))
        print(f"written to {out.relative_to(ROOT)}", file=sys.stderr)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
