"""Heartbeat ingest on the primary: results stored and voted on per second.

Starts the primary's sync API as a real gunicorn process on loopback (SQLite
or PostgreSQL) with ``--endpoints`` endpoints that other locations already
check: this instance's own location and ``--silent-dependents`` registered
dependents have a ``location_status`` row for every endpoint (fresh, most
UP, ``--failing`` of them DOWN), and a first consensus pass has decided
every endpoint. Then ``--senders`` dependents register and send heartbeats
of ``--batch`` results each (for the next ``--batch`` endpoints in turn, the
``--failing`` ones failing) for ``--duration`` seconds.

Every heartbeat goes the whole way (``primary.heartbeat``): token check,
payload validation, the results' insert, the dependent's probe state
(``consensus.note_heartbeat``), then ``consensus.ingest``: the dependent's
location states, a probe judgement of it (its batch has failures), and a
vote on every endpoint in the batch from all its locations' states, under
the endpoints' row locks; the instance's state, one commit.

Reports results stored per second (counted in the database, warm-up
excluded), the heartbeat latency, and the CPU of the sync API's processes.

    python -m bench.ingest --database sqlite
    python -m bench.ingest --database postgresql://postgres@127.0.0.1:5432/test
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psutil
import requests

from bench.scratch import busy_percent, cpu_ticks, create_database, drop_database

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-join-secret-0123456789"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def failing(endpoint_id: int, share: float) -> bool:
    """Whether an endpoint is down everywhere in this run (spread evenly)."""
    return share > 0 and endpoint_id % max(1, round(1 / share)) == 0


def seed(endpoints: int, silent_dependents: int, failing_share: float) -> None:
    """Run in a child process with the server's environment: endpoints, the
    silent dependents, every endpoint's state at this instance's location
    and theirs, and one consensus pass so every endpoint is decided."""
    from datetime import timedelta

    from sqlalchemy import insert

    from app import create_app
    from app.extensions import db
    from app.models import Endpoint, LocationStatus, MonitoringInstance, ProbeState
    from app.services import configuration, consensus

    app = create_app(serve="none")
    with app.app_context():
        now = datetime.now(timezone.utc)
        db.session.add_all([Endpoint(name=f"e{i}", check_type="tcp", target="127.0.0.1", port=9, options={})
                            for i in range(endpoints)])
        db.session.flush()
        ids = sorted(db.session.execute(db.select(Endpoint.id)).scalars())
        assert ids == list(range(1, endpoints + 1)), "the heartbeats name endpoints 1..N: use a fresh database"
        locations = [(configuration.instance_id(), "bench")]
        for n in range(silent_dependents):
            instance_id = str(uuid.uuid4())
            locations.append((instance_id, f"silent-{n}"))
            db.session.add(MonitoringInstance(
                id=instance_id, name=f"silent-{n}", location=f"silent-{n}", role="dependent", status="active",
                last_heartbeat_at=now, registered_at=now - timedelta(days=1),
                connection_info={"heartbeatInterval": 30}))
            db.session.add(ProbeState(instance_id=instance_id, votes_from=now - timedelta(days=1),
                                      heartbeat_interval=30, updated_at=now))
        db.session.flush()
        rows = []
        for instance_id, location in locations:
            for eid in ids:
                down = failing(eid, failing_share)
                rows.append({
                    "endpoint_id": eid, "instance_id": instance_id, "location": location,
                    "status": "DOWN" if down else "UP", "consecutive_failures": 5 if down else 0,
                    "consecutive_successes": 0 if down else 50, "last_checked_at": now - timedelta(seconds=5),
                    "last_is_ok": not down, "last_response_time_ms": None if down else 12.0,
                    "last_failure_reason": "connection refused" if down else None,
                    "certificate_expires_at": None, "updated_at": now})
        db.session.execute(insert(LocationStatus.__table__), rows)
        db.session.commit()
        summary = consensus.reevaluate()
        statuses = {}
        for t in summary["transitions"]:
            statuses[t.to_status] = statuses.get(t.to_status, 0) + 1
        print(json.dumps({"decided": statuses, "locations": len(locations)}))


def count_results(env: dict) -> int:
    return int(subprocess.run([sys.executable, "-c", (
        "from app import create_app\nfrom app.extensions import db\nfrom sqlalchemy import text\n"
        "app = create_app(serve='none')\nwith app.app_context():\n"
        "    print(db.session.execute(text('SELECT COUNT(*) FROM response_times')).scalar())\n")],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="sqlite",
                        help="'sqlite' or a postgresql:// URL (a database of the run's own is made on that "
                             "server and dropped at the end)")
    parser.add_argument("--senders", type=int, default=4, help="concurrent dependents sending")
    parser.add_argument("--batch", type=int, default=500, help="results per heartbeat")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds to measure")
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--silent-dependents", type=int, default=2,
                        help="registered dependents whose states exist (they vote) but that send nothing")
    parser.add_argument("--failing", type=float, default=0.02, help="share of endpoints down everywhere")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the sync API")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "PRIMARY_SYNC_URL"}}
    env.update(DATA_DIR=str(workdir), ENABLE_SYNC_API="true", SYNC_SHARED_SECRET=SECRET,
               SECRET_KEY="bench-secret-key-0123456789", LOG_LEVEL="WARNING", INSTANCE_LOCATION="bench")
    database_url = None
    if args.database != "sqlite":
        database_url = create_database(args.database, "bench_ingest")
        env["DATABASE_URL"] = database_url
    else:
        env.pop("DATABASE_URL", None)

    server = None
    try:
        subprocess.run([sys.executable, "-m", "app", "init"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        seeded = json.loads(subprocess.run(
            [sys.executable, "-c", f"from bench.ingest import seed; seed({args.endpoints}, "
                                   f"{args.silent_dependents}, {args.failing})"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(f"seeded {args.endpoints} endpoints with {seeded['locations']} locations' states; "
              f"first consensus: {seeded['decided']}", file=sys.stderr)

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers),
             "--threads", "4", "--no-control-socket", "wsgi:sync_app"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}/sync/api"
        for _ in range(100):
            try:
                if requests.get(f"{base}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        tokens = []
        for n in range(args.senders):
            reply = requests.post(f"{base}/register", headers={"X-Cluster-Secret": SECRET}, json={
                "instanceId": str(uuid.uuid4()), "instanceName": f"bench-{n}", "location": f"loc-{n}",
            }, timeout=10)
            reply.raise_for_status()
            tokens.append((reply.json()["instanceId"], reply.json()["token"]))

        def payload(instance_id, turn):
            # Heartbeat ``turn`` of a sender carries the next ``batch`` endpoints
            # (ids 1..N, as `app init` on a fresh database hands them out).
            now = datetime.now(timezone.utc).isoformat()
            results = []
            for i in range(args.batch):
                endpoint_id = (turn * args.batch + i) % args.endpoints + 1
                ok = not failing(endpoint_id, args.failing)
                results.append({
                    "resultId": str(uuid.uuid4()), "endpointId": endpoint_id, "isOk": ok,
                    "responseTime": 12.3 if ok else None, "status": "UP" if ok else "DOWN",
                    "failureReason": None if ok else "connection refused", "checkType": "tcp",
                    "metadata": {"address": "127.0.0.1", "port": 9}, "checkedAt": now})
            return {"instanceId": instance_id, "results": results}

        # Warm up every gunicorn worker, and give every endpoint a state from
        # every sender, so the measured heartbeats vote with all locations.
        warmup_turns = math.ceil(args.endpoints / args.batch)
        for turn in range(warmup_turns):
            for instance_id, token in tokens:
                requests.put(f"{base}/heartbeat", json=payload(instance_id, turn),
                             headers={"Authorization": f"Bearer {token}"}, timeout=60).raise_for_status()
        stored_before = count_results(env)

        server_procs = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        cpu_before = sum(sum(p.cpu_times()[:2]) for p in server_procs)
        machine_before = cpu_ticks()
        stop_at = time.time() + args.duration
        latencies, acknowledged, errors = [], [0], [0]
        lock = threading.Lock()

        def sender(instance_id, token):
            session = requests.Session()
            turn = warmup_turns
            while time.time() < stop_at:
                body = json.dumps(payload(instance_id, turn))
                turn += 1
                started = time.perf_counter()
                reply = session.put(f"{base}/heartbeat", data=body, timeout=60, headers={
                    "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                took = time.perf_counter() - started
                with lock:
                    if reply.ok:
                        latencies.append(took)
                        acknowledged[0] += len(reply.json()["acknowledged"])
                    else:
                        errors[0] += 1

        started = time.time()
        threads = [threading.Thread(target=sender, args=t) for t in tokens]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.time() - started
        cpu = sum(sum(p.cpu_times()[:2]) for p in server_procs if p.is_running()) - cpu_before
        machine_busy = busy_percent(machine_before, cpu_ticks())

        stored = count_results(env) - stored_before
        figures = {
            "database": "sqlite" if args.database == "sqlite" else "postgresql",
            "endpoints": args.endpoints,
            "locations_per_endpoint": seeded["locations"] + args.senders,
            "senders": args.senders,
            "batch": args.batch,
            "failing_share": args.failing,
            "seconds": round(elapsed, 2),
            "heartbeats": len(latencies),
            "errors": errors[0],
            "acknowledged": acknowledged[0],
            "stored": stored,
            "results_stored_per_second": round(stored / elapsed, 1),
            "heartbeat_ms_p50": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "heartbeat_ms_p99": round(sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1000, 1)
            if len(latencies) > 1 else None,
            # gunicorn master and workers only: PostgreSQL's own processes are not counted.
            "sync_api_cpu_ms_per_result": round(cpu * 1000 / max(1, stored), 3),
            # All cores over the window, from /proc/stat: this benchmark's senders,
            # the server, PostgreSQL, and whatever else was running.
            "machine_busy_percent": machine_busy,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "load_average": os.getloadavg(),
        }
        print(json.dumps(figures, indent=2))
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"ingest-{figures['database']}.json").write_text(json.dumps(figures, indent=2))
        return 0
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        if database_url:
            drop_database(args.database, database_url)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
