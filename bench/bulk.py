"""Creating and importing endpoints in bulk, and what basic auth costs per request.

    .venv/bin/python -m bench.bulk
    .venv/bin/python -m bench.bulk --database-url postgresql://postgres@127.0.0.1:5432/postgres

On SQLite (a temporary ``DATA_DIR``), or with ``--database-url`` on a
database of the run's own made on that PostgreSQL server (dropped at the
end; the database in the URL is only connected to):

1. The JSON API as a real gunicorn server (``wsgi:app``, 2 workers, 4
   threads each) on a loopback port, on a fresh instance (``python -m app
   init``) holding one administrator, her API key and one endpoint.
2. Basic auth against an API key: ``--requests`` (200) ``GET
   /api/v1/endpoints/1`` one after another on one keep-alive connection
   with the user's email and password, then as many with the API key;
   the time of each request as the client sees it (median, p95), and the
   server's CPU per request. The first basic-auth request of each worker
   verifies the password with scrypt; the rest find it verified.
3. ``POST /api/v1/endpoints/batch`` with ``--endpoints`` (10,000) endpoints
   (http, tcp and ping in turn, 20 groups) in one request, sent by the
   benchmark with ``requests``: the round trip, the server's CPU, and that
   every endpoint is stored and the configuration version moved once.
4. In this process, on a fresh database of its own: the YAML import as
   ``./monitor config import`` runs it (reading the document, then applying
   it: every endpoint added, in one transaction), the document of
   ``bench.config_import`` with as many endpoints.

Prints the figures and writes them as JSON to ``bench/results/bulk-<database>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
EMAIL = "bench@example.org"
PASSWORD = "correct horse battery staple"
GOAL_SECONDS = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed() -> None:
    """In the instance's environment: an administrator, her API key and one
    endpoint; prints the key as JSON."""
    from app import create_app
    from app.services.accounts import create_api_key, create_user
    from app.services.endpoints import create_endpoint

    app = create_app(serve="none")
    with app.app_context():
        create_user(EMAIL, PASSWORD, is_admin=True)
        _, key = create_api_key(EMAIL, "bench")
        create_endpoint({"name": "one", "checkType": "tcp", "target": "127.0.0.1", "port": 9})
    print(json.dumps({"key": key}))


def batch(count: int) -> list[dict]:
    """``count`` endpoints as the batch route takes them."""
    kinds = [
        lambda i: {"checkType": "http", "target": f"http://127.0.0.1:8080/health/{i}", "options": {"keyword": "ok"}},
        lambda i: {"checkType": "tcp", "target": "127.0.0.1", "port": 1024 + i % 60000},
        lambda i: {"checkType": "ping", "target": f"127.0.{i // 250 % 250}.{i % 250 + 1}"},
    ]
    return [{"name": f"endpoint {i:05d}", **kinds[i % 3](i), "intervalSeconds": 60, "group": f"group {i % 20:02d}"}
            for i in range(count)]


def _cpu(processes) -> float:
    """User and system CPU seconds of these processes (one that has gone counts no more)."""
    import psutil

    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def measure_server(env: dict, endpoints: int, requests_each: int) -> dict:
    """Steps 1 to 3: the server, the auth requests, the batch."""
    import psutil
    import requests

    subprocess.run([sys.executable, "-m", "app", "init"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    key = json.loads(subprocess.run([sys.executable, "-c", "from bench.bulk import seed; seed()"], cwd=ROOT,
                                    env=env, check=True, capture_output=True, text=True).stdout.splitlines()[-1])["key"]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4",
         "--timeout", "120", "--no-control-socket", "wsgi:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        for _ in range(150):
            try:
                if requests.get(f"{base}/openapi.json", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        processes = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]

        figures: dict = {}
        for label, auth in (("basic_auth", {"auth": (EMAIL, PASSWORD)}),
                            ("api_key", {"headers": {"Authorization": f"Bearer {key}"}})):
            session = requests.Session()
            times = []
            cpu_before = _cpu(processes)
            for _ in range(requests_each):
                started = time.perf_counter()
                reply = session.get(f"{base}/endpoints/1", timeout=30, **auth)
                times.append(time.perf_counter() - started)
                reply.raise_for_status()
            cpu = _cpu(processes) - cpu_before
            figures[label] = {"requests": requests_each, "median_ms": round(statistics.median(times) * 1000, 2),
                              "p95_ms": round(_percentile(times, 0.95) * 1000, 2),
                              "first_ms": round(times[0] * 1000, 2),
                              "server_cpu_ms_per_request": round(cpu * 1000 / requests_each, 2)}
            session.close()

        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        body = json.dumps({"endpoints": batch(endpoints)})
        version_before = config_version(env)
        cpu_before = _cpu(processes)
        started = time.perf_counter()
        reply = requests.post(f"{base}/endpoints/batch", data=body, headers=headers, timeout=300)
        seconds = time.perf_counter() - started
        cpu = _cpu(processes) - cpu_before
        if reply.status_code != 201:
            raise SystemExit(f"the batch was refused: {reply.status_code} {reply.text[:500]}")
        answer = reply.json()
        listed = requests.get(f"{base}/endpoints", headers=headers, timeout=120).json()["endpoints"]
        if answer["created"] != endpoints or len(listed) != endpoints + 1:
            raise SystemExit(f"expected {endpoints} endpoints created, the answer says {answer['created']} "
                             f"and the list holds {len(listed) - 1}")
        figures["batch"] = {"endpoints": endpoints, "body_bytes": len(body.encode()), "seconds": round(seconds, 3),
                            "server_cpu_s": round(cpu, 3),
                            "config_version_before": version_before,
                            "config_version_after": answer["configVersion"]}
        return figures
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def config_version(env: dict) -> int:
    """The instance's configuration version, read in a process of its own."""
    return int(subprocess.run([sys.executable, "-c", (
        "from app import create_app\n"
        "from app.services import configuration\n"
        "with create_app(serve='none').app_context():\n"
        "    print(configuration.config_version())\n")],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout.split()[-1])


def measure_import(endpoints: int, database_url: str | None) -> dict:
    """Step 4: the YAML import in this process, as ``./monitor config import`` runs it."""
    from app.extensions import db
    from app.services import config_documents, configuration
    from bench.config_import import document, fresh_app

    text = document(endpoints)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-bulk-import-"))
    try:
        app = fresh_app(data_dir, database_url)
        with app.app_context():
            before = configuration.config_version()
            started, cpu_started = time.perf_counter(), time.process_time()
            parsed = config_documents.parse_yaml(text)
            read_s, read_cpu = time.perf_counter() - started, time.process_time() - cpu_started
            outcome = config_documents.import_document(parsed)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            assert len(outcome.sections["endpoints"].added) == endpoints
            moved = configuration.config_version() - before
            db.session.remove()
            db.engine.dispose()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {"endpoints": endpoints, "document_bytes": len(text.encode()), "seconds": round(seconds, 3),
            "cpu_s": round(cpu, 3), "read_s": round(read_s, 3), "read_cpu_s": round(read_cpu, 3),
            "apply_s": round(seconds - read_s, 3), "config_version_moved": moved}


def run(database: str | None, endpoints: int, requests_each: int) -> dict:
    """Every figure on SQLite (``database`` None) or on a database of the
    run's own on the PostgreSQL server ``database`` names."""
    from bench.scratch import busy_percent, cpu_ticks, create_database, drop_database

    sys.path.insert(0, str(ROOT))
    workdir = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "PRIMARY_SYNC_URL", "ENABLE_SYNC_API",
                                                            "DATABASE_URL", "DATABASE_PATH"}}
    env.update(DATA_DIR=str(workdir), SECRET_KEY="bench-secret-key-0123456789", LOG_LEVEL="WARNING")
    server_db = import_db = None
    ticks = cpu_ticks()
    try:
        if database:
            server_db = create_database(database, "bench_bulk")
            import_db = create_database(database, "bench_bulk_import")
            env["DATABASE_URL"] = server_db
        figures = measure_server(env, endpoints, requests_each)
        figures["yaml_import"] = measure_import(endpoints, import_db)
    finally:
        if server_db:
            drop_database(database, server_db)
        if import_db:
            drop_database(database, import_db)
        shutil.rmtree(workdir, ignore_errors=True)
    figures.update(database="postgresql" if database else "sqlite", machine_busy_percent=busy_percent(ticks, cpu_ticks()),
                   load_average=[round(v, 2) for v in os.getloadavg()],
                   measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return figures


def report(figures: dict) -> None:
    basic, key, made, imported = figures["basic_auth"], figures["api_key"], figures["batch"], figures["yaml_import"]
    print(f"{figures['database']}, load average {figures['load_average']}, "
          f"both cores {figures['machine_busy_percent']} % busy over the run")
    print(f"  per request, {basic['requests']} each: basic auth {basic['median_ms']} ms median, {basic['p95_ms']} ms "
          f"p95 (first {basic['first_ms']} ms), server CPU {basic['server_cpu_ms_per_request']} ms; API key "
          f"{key['median_ms']} / {key['p95_ms']} ms, server CPU {key['server_cpu_ms_per_request']} ms")
    print(f"  batch API, {made['endpoints']:,} endpoints ({made['body_bytes'] / 2**20:.1f} MiB): {made['seconds']} s, "
          f"server CPU {made['server_cpu_s']} s; config version {made['config_version_before']} -> "
          f"{made['config_version_after']}")
    print(f"  YAML import, {imported['endpoints']:,} endpoints ({imported['document_bytes'] / 2**20:.1f} MiB): "
          f"{imported['seconds']} s (CPU {imported['cpu_s']} s): reading {imported['read_s']} s, applying "
          f"{imported['apply_s']} s; config version moved {imported['config_version_moved']}")


def figures(quick: bool = False) -> list[dict]:
    """Rows for ``bench.table``: SQLite, and PostgreSQL when TEST_DATABASE_URL names a server."""
    rows = []
    server = os.environ.get("TEST_DATABASE_URL")
    for database in [None, *([server] if server else [])]:
        result = run(database, 10_000, 50 if quick else 200)
        name = result["database"]
        made, imported = result["batch"], result["yaml_import"]
        basic, key = result["basic_auth"], result["api_key"]
        rows += [
            {"figure": f"10,000 endpoints through POST /api/v1/endpoints/batch ({name})", "target": "< 5 s",
             "measured": f"{made['seconds']:.2f} s (server CPU {made['server_cpu_s']:.2f} s)",
             "passed": made["seconds"] < GOAL_SECONDS},
            {"figure": f"YAML import of 10,000 endpoints, read and applied ({name})", "target": "< 5 s",
             "measured": f"{imported['seconds']:.2f} s (CPU {imported['cpu_s']:.2f} s)",
             "passed": imported["seconds"] < GOAL_SECONDS},
            {"figure": f"a request with basic auth vs an API key, median ({name})",
             "target": "basic auth under twice the API key's time",
             "measured": f"{basic['median_ms']:.1f} ms vs {key['median_ms']:.1f} ms",
             "passed": basic["median_ms"] < 2 * key["median_ms"]},
        ]
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server (a database of the run's own is made there and dropped)")
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200, help="requests with each kind of credentials")
    args = parser.parse_args(argv)
    result = run(args.database_url, args.endpoints, args.requests)
    report(result)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"bulk-{result['database']}.json"
    out.write_text(json.dumps({**result, "machine": platform.platform(), "python": platform.python_version()},
                              indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
