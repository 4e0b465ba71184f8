"""Heartbeat ingest on the primary: results stored per second.

Starts the primary's sync API as a real gunicorn process on loopback (SQLite
or PostgreSQL), registers a few dependents, and sends heartbeats of
``--batch`` results each from ``--senders`` threads for ``--duration``
seconds. Reports results stored per second (counted in the database), the
heartbeat latency, and the CPU the server processes used.

    python -m bench.ingest --database sqlite
    python -m bench.ingest --database postgresql://postgres@127.0.0.1:5432/test
"""
from __future__ import annotations

import argparse
import json
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
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-join-secret-0123456789"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="sqlite", help="'sqlite' or a postgresql:// URL (its schema is reset)")
    parser.add_argument("--senders", type=int, default=4, help="concurrent dependents sending")
    parser.add_argument("--batch", type=int, default=500, help="results per heartbeat")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds to measure")
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the sync API")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "PRIMARY_SYNC_URL"}}
    env.update(DATA_DIR=str(workdir), ENABLE_SYNC_API="true", SYNC_SHARED_SECRET=SECRET,
               SECRET_KEY="bench-secret-key-0123456789", LOG_LEVEL="WARNING", INSTANCE_LOCATION="bench")
    if args.database != "sqlite":
        env["DATABASE_URL"] = args.database
        engine = create_engine(args.database)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    else:
        env.pop("DATABASE_URL", None)

    subprocess.run([sys.executable, "-m", "app", "init"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-c", (
        "from app import create_app\n"
        "from app.extensions import db\n"
        "from app.models import Endpoint\n"
        "app = create_app(serve='none')\n"
        "with app.app_context():\n"
        f"    db.session.add_all([Endpoint(name=f'e{{i}}', check_type='tcp', target='127.0.0.1', port=9, options={{}}) for i in range({args.endpoints})])\n"
        "    db.session.commit()\n")], cwd=ROOT, env=env, check=True)

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers),
         "--threads", "4", "--no-control-socket", "wsgi:sync_app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/sync/api"
    try:
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

        def payload(instance_id):
            now = datetime.now(timezone.utc).isoformat()
            return {"instanceId": instance_id, "results": [
                {"resultId": str(uuid.uuid4()), "endpointId": (i % args.endpoints) + 1, "isOk": True,
                 "responseTime": 12.3, "status": "UP", "failureReason": None, "checkType": "tcp",
                 "metadata": {"address": "127.0.0.1", "port": 9}, "checkedAt": now}
                for i in range(args.batch)]}

        # Warm up every gunicorn worker.
        for instance_id, token in tokens:
            requests.put(f"{base}/heartbeat", json=payload(instance_id),
                         headers={"Authorization": f"Bearer {token}"}, timeout=30).raise_for_status()

        server_procs = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        cpu_before = sum(sum(p.cpu_times()[:2]) for p in server_procs)
        stop_at = time.time() + args.duration
        latencies, acknowledged, errors = [], [0], [0]
        lock = threading.Lock()

        def sender(instance_id, token):
            session = requests.Session()
            while time.time() < stop_at:
                body = json.dumps(payload(instance_id))
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

        count_env = dict(env)
        stored = int(subprocess.run([sys.executable, "-c", (
            "from app import create_app\nfrom app.extensions import db\nfrom sqlalchemy import text\n"
            "app = create_app(serve='none')\nwith app.app_context():\n"
            "    print(db.session.execute(text('SELECT COUNT(*) FROM response_times')).scalar())\n")],
            cwd=ROOT, env=count_env, check=True, capture_output=True, text=True).stdout.strip())
        warmup = args.senders * args.batch
        figures = {
            "database": "sqlite" if args.database == "sqlite" else "postgresql",
            "senders": args.senders,
            "batch": args.batch,
            "seconds": round(elapsed, 2),
            "heartbeats": len(latencies),
            "errors": errors[0],
            "acknowledged": acknowledged[0],
            "stored": stored - warmup,
            "results_per_second": round((stored - warmup) / elapsed, 1),
            "heartbeat_ms_p50": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "heartbeat_ms_p99": round(sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1000, 1)
            if len(latencies) > 1 else None,
            "server_cpu_ms_per_result": round(cpu * 1000 / max(1, stored - warmup), 3),
        }
        print(json.dumps(figures, indent=2))
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"ingest-{figures['database']}.json").write_text(json.dumps(figures, indent=2))
        return 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
