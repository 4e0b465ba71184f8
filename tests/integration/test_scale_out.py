"""The scale-out path as real processes on one PostgreSQL database and one
Redis server: two workers and two clocks (``python -m workers.worker``,
``python -m workers.clock``, as the Procfile runs them), the web UI under
gunicorn with WEB_CONCURRENCY=3 and the sync API with two gunicorn workers.

Every endpoint points at a loopback HTTP server that records each request,
so a check slot that ran twice or not at all shows in its log, and in the
result rows stored for it.
"""
from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import requests
from rq import Queue
from rq.registry import StartedJobRegistry
from sqlalchemy import create_engine, make_url, text

from tests.conftest import POSTGRES_URL, ROOT, SECRET, SERVER_REDIS_URL, instance_app, make_app
from tests.peers.process import ADMIN, monitor_env, wait_until

pytestmark = pytest.mark.process_tree

INTERVAL = 5  # the shortest an endpoint may have
ENDPOINTS = 6
WINDOW_SECONDS = 30
# A check never starts before its slot's due time (the job waits for it),
# and it starts less than an interval after it unless the machine is far
# behind: so a check belongs to the latest slot due at or before it. One an
# interval late would count as a slot missed and the next run twice.
EDGE_SECONDS = INTERVAL / 2  # between a window's edge and the slots it counts
START_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
ACCESS_LOG_FORMAT = '<%(p)s> %(m)s %(U)s %(s)s'
ACCESS_LINE = re.compile(r"^<<?(\d+)>?> (\w+) (\S+) (\d{3})$", re.MULTILINE)


class RecordingServer:
    """A loopback HTTP server that answers 200 and records when each path was asked for."""

    def __init__(self):
        self.requests: list[tuple[str, float]] = []
        lock = threading.Lock()
        requests_ = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with lock:
                    requests_.append((self.path, time.time()))
                body = b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def times(self, path: str) -> list[float]:
        return sorted(at for asked, at in list(self.requests) if asked == path)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class ScaledOut:
    """One primary's processes on a shared database and Redis, and their logs."""

    env: dict[str, str]
    database_url: str
    logs: Path
    target: RecordingServer
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    endpoint_ids: list[int] = field(default_factory=list)

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.env['PORT']}"

    @property
    def sync(self) -> str:
        return f"http://127.0.0.1:{self.env['SYNC_API_PORT']}"

    def start(self, name: str, command: list[str]) -> None:
        with open(self.logs / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def alive(self) -> list[str]:
        return [name for name, process in self.processes.items() if process.poll() is None]

    def stop(self, *names: str) -> None:
        """SIGTERM each named process group (every one without names), then SIGKILL what is left."""
        chosen = [self.processes[name] for name in names or self.processes]
        for process in chosen:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in chosen:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(process.pid, signal.SIGKILL)  # gunicorn's workers too
            except ProcessLookupError:
                pass
            process.wait(timeout=10)

    def rows(self, sql: str, **params) -> list[tuple]:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(text(sql), params)]
        finally:
            engine.dispose()

    def tails(self) -> str:
        return "\n".join(f"--- {name}:\n{self.log(name)[-2500:]}" for name in self.processes)


def gunicorn(bind_port: str, workers: int, app: str, threads: int) -> list[str]:
    """The Procfile's gunicorn command, with the serving worker's pid in the access log."""
    return [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{bind_port}", "--workers", str(workers),
            "--threads", str(threads), "--no-control-socket", "--worker-tmp-dir", "/dev/shm",
            "--access-logfile", "-", "--access-logformat", ACCESS_LOG_FORMAT, app]


def add_endpoints(data_dir: Path, database_url: str, target: RecordingServer) -> list[int]:
    """ENDPOINTS http endpoints every INTERVAL seconds, each on a path of its own at ``target``."""
    from app.extensions import db
    from app.services.endpoints import create_endpoint

    application = make_app(data_dir, {"DATABASE_URL": database_url}, serve="none")
    with application.app_context():
        ids = [create_endpoint({"name": f"site-{n}", "checkType": "http", "target": f"{target.url}/site-{n}",
                                "intervalSeconds": INTERVAL}).id for n in range(ENDPOINTS)]
        db.session.remove()
        db.engine.dispose()
    return ids


@pytest.fixture(scope="module")
def scaled_out(tmp_path_factory):
    if not POSTGRES_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    try:
        redis.Redis.from_url(SERVER_REDIS_URL, socket_connect_timeout=1).flushdb()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"no Redis server at {SERVER_REDIS_URL}")
    name = f"scale_out_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    server = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    database_url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    root = tmp_path_factory.mktemp("scale-out")
    target = RecordingServer()
    env = monitor_env(root / "data", admin=ADMIN, DATABASE_URL=database_url, REDIS_URL=SERVER_REDIS_URL,
                      ENABLE_SYNC_API="true", SYNC_SHARED_SECRET=SECRET, SECRET_KEY="scale-out-secret-0123456789",
                      INSTANCE_NAME="fra-1", INSTANCE_LOCATION="frankfurt", WEB_CONCURRENCY="3",
                      LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    (root / "data").mkdir()
    cluster = ScaledOut(env, database_url, root, target)
    try:
        # The Procfile's release step, then the endpoints.
        done = subprocess.run([sys.executable, "-m", "app", "init"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"`python -m app init` failed:\n{done.stdout}{done.stderr}"
        cluster.endpoint_ids = add_endpoints(root / "data", database_url, target)
        for n in (1, 2):
            cluster.start(f"worker.{n}", [sys.executable, "-m", "workers.worker"])
            cluster.start(f"clock.{n}", [sys.executable, "-m", "workers.clock"])
        cluster.start("web", gunicorn(env["PORT"], int(env["WEB_CONCURRENCY"]), "wsgi:app", threads=4))
        cluster.start("sync", gunicorn(env["SYNC_API_PORT"], 2, "wsgi:sync_app", threads=8))
        wait_until(lambda: requests.get(f"{cluster.web}/healthz", timeout=5).ok
                   and requests.get(f"{cluster.sync}/sync/api/healthz", timeout=5).ok,
                   START_TIMEOUT, lambda: f"web and sync did not answer:\n{cluster.tails()}")
        yield cluster
    finally:
        cluster.stop()
        target.stop()
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()
        redis.Redis.from_url(SERVER_REDIS_URL).flushdb()


def stored_at(naive: datetime) -> float:
    """A timestamp read with plain SQL (naive UTC, as the app stores it), in unix seconds."""
    return naive.replace(tzinfo=timezone.utc).timestamp()


def slot_counts(times: list[float], next_due: float, first_slot: float) -> tuple[Counter, float]:
    """How many of ``times`` fall on each slot ``next_due - k * INTERVAL``
    from ``first_slot`` on (a time before it counts under None), and the
    longest wait from a slot's due time to a time of it."""
    counts: Counter = Counter()
    latest = 0.0
    for at in times:
        slot = next_due - math.ceil((next_due - at) / INTERVAL) * INTERVAL  # the latest due at or before it
        if slot >= first_slot - 1e-6:
            counts[round(slot, 3)] += 1
            latest = max(latest, at - slot)
        else:
            counts[None] += 1
    return counts, latest


def test_two_clocks_and_two_workers_run_every_slot_once(scaled_out):
    """Over a window of WINDOW_SECONDS, each endpoint's every slot is asked
    for once and stored once: neither clock enqueued a slot the other had
    claimed (the lease, and ``claim_due``'s conditional UPDATE behind it),
    no worker ran a job twice, and none was dropped."""
    cluster = scaled_out
    paths = {endpoint_id: f"/site-{n}" for n, endpoint_id in enumerate(cluster.endpoint_ids)}
    # 1. Warm-up: an endpoint never checked is checked at once, off its
    #    grid, then settles into its phase. The window opens once every
    #    endpoint has had that first check.
    wait_until(lambda: all(cluster.target.times(path) for path in paths.values()), START_TIMEOUT,
               lambda: f"not every endpoint was checked:\n{cluster.tails()}")
    window_opens = time.time() + EDGE_SECONDS
    time.sleep(WINDOW_SECONDS)
    window_closes = time.time()
    assert sorted(cluster.alive()) == sorted(cluster.processes), cluster.tails()
    # 2. Stop claiming (a clock claims up to a second ahead), let the workers
    #    finish what is queued and started, and wait until every request
    #    has its result.
    cluster.stop("clock.1", "clock.2")

    def stored() -> dict[int, list[tuple]]:
        rows = cluster.rows("SELECT id, endpoint_id, checked_at FROM response_times ORDER BY checked_at")
        return {e: [r for r in rows if r[1] == e] for e in paths}

    def settled():
        connection = redis.Redis.from_url(SERVER_REDIS_URL)
        queued = Queue("checks", connection=connection).count + StartedJobRegistry("checks", connection=connection).count
        results = stored()
        return queued == 0 and all(len(results[e]) == len(cluster.target.times(p)) for e, p in paths.items())

    wait_until(settled, 60, lambda: f"results never matched requests:\n{cluster.tails()}")
    results = stored()
    next_due = dict(cluster.rows("SELECT id, next_check_at FROM endpoints"))
    leaders = [name for name in ("clock.1", "clock.2") if "clock is now leader" in cluster.log(name)]
    assert leaders, f"no clock ever led:\n{cluster.tails()}"

    # 3. Per endpoint: the slots due inside the window each have exactly one
    #    request and one result row; outside it (warm-up and shutdown) no
    #    slot has two; and nothing came before the first slot but the first
    #    check.
    for endpoint_id, path in paths.items():
        asked = cluster.target.times(path)
        assert next_due[endpoint_id] > window_closes, f"{path}: the clocks stopped claiming before the window closed"
        first_slot = next_due[endpoint_id] - math.floor((next_due[endpoint_id] - asked[0]) / INTERVAL) * INTERVAL
        inside = [next_due[endpoint_id] - k * INTERVAL for k in range(1, 1000)
                  if window_opens <= next_due[endpoint_id] - k * INTERVAL <= window_closes]
        assert len(inside) >= WINDOW_SECONDS // INTERVAL - 1
        for name, times in (("requests", asked[1:]),
                            ("results", sorted(stored_at(at) for _, _, at in results[endpoint_id][1:]))):
            counts, latest = slot_counts(times, next_due[endpoint_id], first_slot)
            seen = f"{counts}; the latest came {latest:.2f} s after its due time"
            assert counts[None] == 0, f"{path}: {name} before the first slot: {seen}"
            doubled = {slot: n for slot, n in counts.items() if n > 1}
            assert not doubled, f"{path}: slots with more than one of its {name}: {doubled} ({seen})"
            missed = [slot for slot in inside if counts[round(slot, 3)] != 1]
            assert not missed, f"{path}: slots in the window without {name}: {missed} ({seen})"
        assert len({row[0] for row in results[endpoint_id]}) == len(asked)


def signed_in(cluster: ScaledOut) -> requests.Session:
    """A session signed in through the web UI; every request on a new connection."""
    session = requests.Session()
    session.headers["Connection"] = "close"
    page = session.get(f"{cluster.web}/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = session.post(f"{cluster.web}/login", data={"csrf_token": token, "email": ADMIN[0],
                                                          "password": ADMIN[1]}, allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text[:500]
    return session


def served_by(log: str, method: str, path_prefix: str, status: int) -> Counter:
    """How many requests each gunicorn worker (by pid) served, from the access log."""
    return Counter(pid for pid, m, path, s in ACCESS_LINE.findall(log)
                   if m == method and path.startswith(path_prefix) and int(s) == status)


def test_a_session_and_its_csrf_token_work_on_every_web_worker(scaled_out):
    """Signed in on one gunicorn worker, the session and its CSRF token are
    good on the others: concurrent page loads and form posts all succeed,
    served by more than one worker process."""
    cluster = scaled_out
    session = signed_in(cluster)
    page = session.get(f"{cluster.web}/", timeout=10)
    assert page.status_code == 200 and "/logout" in page.text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    names = []
    with ThreadPoolExecutor(max_workers=6) as pool:
        for burst in range(5):
            pages = list(pool.map(lambda _: session.get(f"{cluster.web}/", allow_redirects=False, timeout=30),
                                  range(12)))
            assert [p.status_code for p in pages] == [200] * 12
            batch = [f"burst-{burst}-key-{n}" for n in range(6)]
            posted = list(pool.map(lambda name: session.post(f"{cluster.web}/api-keys",
                                                             data={"csrf_token": token, "name": name},
                                                             allow_redirects=False, timeout=30), batch))
            assert all(p.status_code in (200, 302) for p in posted), [(p.status_code, p.text[:200]) for p in posted]
            names += batch
            if len(served_by(cluster.log("web"), "POST", "/api-keys", 200) +
                   served_by(cluster.log("web"), "POST", "/api-keys", 302)) >= 2:
                break
    workers = served_by(cluster.log("web"), "POST", "/api-keys", 200) + \
        served_by(cluster.log("web"), "POST", "/api-keys", 302)
    assert len(workers) >= 2, f"every post was served by one worker: {workers}"
    stored = {row[0] for row in cluster.rows("SELECT name FROM api_keys")}
    assert set(names) <= stored


def test_heartbeats_through_two_sync_workers_land_once(scaled_out, tmp_path, migrated_sqlite_template):
    """A dependent registers with the primary's two sync workers and sends
    its results; the same heartbeat sent again concurrently (retries that
    reach other workers) stores each result once, and the dependent is one
    member."""
    from app.checks import CheckResult
    from app.extensions import db
    from app.services import configuration
    from app.services.results import record_results
    from app.services.sync import dependent
    from app.services.sync.schemas import EPOCH_HEADER

    cluster = scaled_out
    member = instance_app(tmp_path / "dependent", migrated_sqlite_template, {
        "PRIMARY_SYNC_URL": cluster.sync, "SYNC_SHARED_SECRET": SECRET, "INSTANCE_NAME": "sgp-1",
        "INSTANCE_LOCATION": "singapore"}, serve="none")
    endpoint_id = cluster.endpoint_ids[0]
    try:
        with member.app_context():
            dependent.sync_once()  # registers and pulls the configuration
            own = configuration.instance_id()
            record_results([(endpoint_id, CheckResult(is_ok=n % 3 != 0, check_type="http", response_time_ms=5.0))
                            for n in range(30)], instance_id=own, location="singapore")
            batch = dependent.outbox_batch()
            payload = dependent.heartbeat_payload(batch)
            token = configuration.get_state(dependent.TOKEN)
            epoch = configuration.epoch()
            sent = sorted(r.result_id for r in batch)
            db.session.commit()

        def heartbeat(_):
            return requests.put(f"{cluster.sync}/sync/api/heartbeat", json=payload, timeout=30,
                                headers={"Authorization": f"Bearer {token}", EPOCH_HEADER: str(epoch),
                                         "Connection": "close"})

        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(5):
                replies = list(pool.map(heartbeat, range(8)))
                assert [r.status_code for r in replies] == [200] * 8, [r.text[:300] for r in replies]
                assert all(sorted(r.json()["acknowledged"]) == sent for r in replies)
                if len(served_by(cluster.log("sync"), "PUT", "/sync/api/heartbeat", 200)) >= 2:
                    break
        workers = served_by(cluster.log("sync"), "PUT", "/sync/api/heartbeat", 200)
        assert len(workers) >= 2, f"every heartbeat was served by one sync worker: {workers}"
        with member.app_context():
            dependent.sync_once()
            assert dependent.outbox_size() == 0
            db.session.remove()
    finally:
        with member.app_context():
            db.session.remove()
            db.engine.dispose()
    stored = cluster.rows("SELECT result_id, count(*) FROM response_times WHERE instance_id = :own "
                          "GROUP BY result_id", own=own)
    assert sorted(result_id for result_id, _ in stored) == sent
    assert {count for _, count in stored} == {1}
    assert cluster.rows("SELECT count(*) FROM monitoring_instances WHERE id = :own", own=own) == [(1,)]
