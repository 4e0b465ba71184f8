"""Consensus pass over every endpoint: seconds per ``consensus.reevaluate()``.

Builds ``--endpoints`` endpoints checked by ``--locations`` locations (this
instance plus registered dependents), one ``location_status`` row per
endpoint and location and a ``probe_states`` row per location, then times
the periodic pass in the states a user meets:

  a. first pass after the states were written: every endpoint is PENDING, so
     every consensus changes (status columns, a status change and an
     aggregated row per endpoint);
  b. steady pass, nothing changed since the last one (read and vote only),
     ``--steady-runs`` times;
  c. after a pause: the regular aggregated rows due for every endpoint
     (``consensus_recorded_at`` older than ``consensus.CADENCE``); one pass
     writes at most ``consensus.CADENCE_ROWS_PER_PASS`` of them;
  d. one location gone silent (its states older than the freshness window):
     every endpoint's voting locations change, few statuses do.

    python -m bench.aggregation --database sqlite
    python -m bench.aggregation --database postgresql://postgres@127.0.0.1:5432/test

In process (no server): the figures are the pass alone, as the clock's job
runs it (without the Redis lock and the alerts the job raises after it).
Each pass is run as of a fixed moment a few seconds after the states were
written, so the states are as labelled however long the run takes.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, insert, select, update

from bench.scratch import analyze_after_seeding, busy_percent, cpu_ticks, create_database, drop_database

ROOT = Path(__file__).resolve().parent.parent
INTERVAL_SECONDS = 60
HEARTBEAT_SECONDS = 30
# What the states hold (shares of endpoints or of states).
DOWN_EVERYWHERE = 0.02    # endpoints down at every location (an outage)
DOWN_SOMEWHERE = 0.01     # endpoints down at 1 to 3 locations (PARTIAL by majority)
FLAPPING = 0.005          # other states DOWN (one location's bad minute)
STALE = 0.01              # states whose latest result is 15 minutes old


def build_app(data_dir: Path, database_url: str | None):
    from flask_migrate import upgrade

    from app import create_app
    from app.config import load_settings
    from app.services import configuration

    env = {"DATA_DIR": str(data_dir), "SECRET_KEY": "bench-secret-key-0123456789", "LOG_LEVEL": "WARNING",
           "INSTANCE_LOCATION": "loc-0"}
    if database_url:
        env["DATABASE_URL"] = database_url
    app = create_app(settings=load_settings(env), serve="none")
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        configuration.ensure_initialized()
    return app


def seed(app, endpoints: int, locations: int, now: datetime) -> dict:
    """Endpoints (PENDING, never voted on), instances, probe states and one
    location_status row per endpoint and location. Returns what was made."""
    from app.extensions import db
    from app.models import Endpoint, LocationStatus, MonitoringInstance, ProbeState
    from app.services import configuration

    rng = random.Random(7)
    with app.app_context():
        own_id = configuration.instance_id()
        instance_ids = [own_id] + [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(locations - 1)]
        db.session.execute(insert(MonitoringInstance.__table__), [
            {"id": iid, "name": f"bench-{n}", "location": f"loc-{n}", "role": "dependent", "failover_order": 0,
             "status": "active", "last_heartbeat_at": now, "registered_at": now - timedelta(days=1),
             "system_info": {}, "connection_info": {"heartbeatInterval": HEARTBEAT_SECONDS}, "config_version": 0}
            for n, iid in enumerate(instance_ids) if n > 0])
        db.session.execute(insert(ProbeState.__table__), [
            {"instance_id": iid, "offline_since": None, "offline_reason": None,
             "votes_from": None if n == 0 else now - timedelta(days=1),
             "heartbeat_interval": None if n == 0 else HEARTBEAT_SECONDS, "connectivity_ok": True,
             "connectivity_error": None, "connectivity_checked_at": now - timedelta(seconds=20), "updated_at": now}
            for n, iid in enumerate(instance_ids)])
        db.session.execute(insert(Endpoint.__table__), [
            {"id": n + 1, "name": f"service-{n:05d}", "check_type": "http",
             "target": f"https://service-{n:05d}.example.test/health", "options": {},
             "interval_seconds": INTERVAL_SECONDS, "timeout_seconds": 10.0, "failure_threshold": 2,
             "success_threshold": 1, "is_paused": False, "group_name": f"team-{n % 20}",
             # Mostly majority; some ask for any two locations.
             "consensus_rule": "atLeast" if n % 20 == 0 else "majority",
             "consensus_min_down": 2 if n % 20 == 0 else None, "alert_on_partial": n % 10 == 0,
             "cert_expiry_days": 14, "created_at": now - timedelta(days=2), "updated_at": now - timedelta(days=1),
             "status": "PENDING", "consecutive_failures": 0, "consecutive_successes": 0, "next_check_at": 0.0,
             "checked_here": True, "locations_voting": 0, "locations_up": 0, "locations_down": 0}
            for n in range(endpoints)])
        counts = {"states": 0, "down_states": 0, "stale_states": 0}
        chunk = []
        for n in range(endpoints):
            down_all = rng.random() < DOWN_EVERYWHERE
            down_at = set(rng.sample(range(locations), rng.randint(1, min(3, locations)))) \
                if not down_all and rng.random() < DOWN_SOMEWHERE else set()
            base_ms = rng.uniform(20, 300)
            for loc, iid in enumerate(instance_ids):
                down = down_all or loc in down_at or rng.random() < FLAPPING
                stale = rng.random() < STALE
                checked = now - timedelta(seconds=900 + rng.uniform(0, 60) if stale else rng.uniform(0, 55))
                chunk.append({
                    "endpoint_id": n + 1, "instance_id": iid, "location": f"loc-{loc}",
                    "status": "DOWN" if down else "UP", "consecutive_failures": rng.randint(2, 30) if down else 0,
                    "consecutive_successes": 0 if down else rng.randint(1, 500), "last_checked_at": checked,
                    "last_is_ok": not down, "last_response_time_ms": None if down else base_ms * rng.uniform(0.7, 1.5),
                    "last_failure_reason": "HTTP 503" if down else None,
                    "certificate_expires_at": now + timedelta(days=30 + n % 300), "updated_at": checked,
                })
                counts["states"] += 1
                counts["down_states"] += down
                counts["stale_states"] += stale
            if len(chunk) >= 20000:
                db.session.execute(insert(LocationStatus.__table__), chunk)
                chunk = []
        if chunk:
            db.session.execute(insert(LocationStatus.__table__), chunk)
        db.session.commit()
        analyze_after_seeding(db)
        db.session.remove()
    return {**counts, "instance_ids": instance_ids}


def timed_pass(app, now: datetime) -> dict:
    from app.extensions import db
    from app.services import consensus

    with app.app_context():
        machine_before = cpu_ticks()
        started = time.perf_counter()
        summary = consensus.reevaluate(now)
        seconds = time.perf_counter() - started
        machine_busy = busy_percent(machine_before, cpu_ticks())
        db.session.remove()
    transitions = summary.pop("transitions")
    return {"seconds": round(seconds, 3), "endpoints": summary["endpoints"], "settled": summary["settled"],
            "recorded": summary["recorded"], "transitions": len(transitions),
            "to": dict(sorted(_count(t.to_status for t in transitions).items())),
            "probes_changed": len(summary["probesChanged"]),
            # All cores during the pass (/proc/stat): the pass itself (and
            # PostgreSQL) is about one core of the two; more is something else.
            "machine_busy_percent": machine_busy}


def _count(values) -> dict:
    out: dict = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return out


def table_counts(app) -> dict:
    from app.extensions import db
    from app.models import AggregatedResult, StatusChange

    with app.app_context():
        out = {"status_changes": db.session.execute(select(func.count()).select_from(StatusChange)).scalar(),
               "aggregated_results": db.session.execute(select(func.count()).select_from(AggregatedResult)).scalar()}
        db.session.remove()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="sqlite",
                        help="'sqlite' or a postgresql:// URL (a database of the run's own is made on that "
                             "server and dropped at the end)")
    parser.add_argument("--endpoints", type=int, default=10000)
    parser.add_argument("--locations", type=int, default=10, help="this instance plus N-1 dependents")
    parser.add_argument("--steady-runs", type=int, default=5, help="steady passes (b); the median is reported")
    args = parser.parse_args(argv)
    if args.locations < 2:
        parser.error("--locations must be at least 2")

    from app.services import consensus

    data_dir = Path(tempfile.mkdtemp(prefix="bench-aggregation-"))
    database_url = None if args.database == "sqlite" else create_database(args.database, "bench_aggregation")
    app = None
    try:
        app = build_app(data_dir, database_url)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        started = time.perf_counter()
        made = seed(app, args.endpoints, args.locations, now)
        instance_ids = made.pop("instance_ids")
        print(f"seeded {args.endpoints} endpoints x {args.locations} locations ({made['states']} states, "
              f"{made['down_states']} DOWN, {made['stale_states']} stale) in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
        pairs = args.endpoints * args.locations

        def figure(label, result):
            result = {"measures": label, **result,
                      "pairs_per_second": round(pairs / result["seconds"]) if result["seconds"] else None}
            print(f"{label}: {result['seconds']:.3f} s, {result['pairs_per_second']:,} endpoint-locations/s "
                  f"(settled {result['settled']}, recorded {result['recorded']}, "
                  f"transitions {result['transitions']}; machine busy {result['machine_busy_percent']} %)",
                  file=sys.stderr)
            return result

        # a. First pass: every endpoint PENDING -> decided.
        first = figure("a. first pass after the states were written (every consensus changes)",
                       timed_pass(app, now + timedelta(seconds=1)))
        after_first = table_counts(app)
        first["written"] = after_first

        # b. Steady: nothing changed since the pass before.
        runs = [timed_pass(app, now + timedelta(seconds=2 + i)) for i in range(args.steady_runs)]
        if any(r["settled"] or r["recorded"] for r in runs):
            print("warning: a steady pass wrote something; the figure is not of a steady pass", file=sys.stderr)
        steady = figure("b. steady pass, nothing changed (read and vote)", {
            **runs[len(runs) // 2], "seconds": round(statistics.median(r["seconds"] for r in runs), 3),
            "runs": [r["seconds"] for r in runs],
            "machine_busy_percent": max(r["machine_busy_percent"] or 0 for r in runs)})

        # c. The regular aggregated rows due for every endpoint.
        from app.extensions import db
        from app.models import Endpoint, LocationStatus

        due_at = now + timedelta(seconds=20)
        with app.app_context():
            db.session.execute(update(Endpoint).values(consensus_recorded_at=due_at - consensus.CADENCE
                                                       - timedelta(seconds=1)))
            db.session.commit()
            db.session.remove()
        before = table_counts(app)
        due = figure(f"c. pass after a pause, aggregated rows due for every endpoint (at most "
                     f"{consensus.CADENCE_ROWS_PER_PASS} written a pass)",
                     timed_pass(app, due_at))
        due["written"] = {k: v - before[k] for k, v in table_counts(app).items()}

        # d. One location silent: its states older than any freshness window.
        silent_at = now + timedelta(seconds=25)
        with app.app_context():
            db.session.execute(update(LocationStatus).where(LocationStatus.instance_id == instance_ids[-1])
                               .values(last_checked_at=silent_at - timedelta(minutes=10)))
            db.session.commit()
            db.session.remove()
        before = table_counts(app)
        silent = figure("d. pass after one location went silent (every endpoint's voters change)",
                        timed_pass(app, silent_at))
        silent["written"] = {k: v - before[k] for k, v in table_counts(app).items()}

        figures = {
            "database": "sqlite" if args.database == "sqlite" else "postgresql",
            "endpoints": args.endpoints, "locations": args.locations, "states": made,
            "first_pass": first, "steady_pass": steady, "due_pass": due, "silent_location_pass": silent,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "load_average": os.getloadavg(),
        }
        print(json.dumps(figures, indent=2))
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"aggregation-{figures['database']}-{args.endpoints}x{args.locations}.json").write_text(
            json.dumps(figures, indent=2))
        return 0
    finally:
        if database_url:
            if app is not None:
                from app.extensions import db

                with app.app_context():
                    db.engine.dispose()
            drop_database(args.database, database_url)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
