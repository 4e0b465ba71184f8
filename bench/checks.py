"""HTTP checks through the whole instance: CPU per check, schedule lag, memory.

    .venv/bin/python -m bench.checks --endpoints 1000 --interval 10 --duration 60

1. Starts a loopback HTTP target (asyncio, "200 OK", ``Connection: close``)
   in a separate process; its CPU is reported but not counted.
2. Creates a fresh ``DATA_DIR``, runs ``python -m app init``, creates one
   endpoint with ``create_endpoint`` and copies its row for the rest.
3. Starts the real process tree, ``python -m app start`` (embedded Redis,
   web, sync, clock, RQ workers), warms up, then measures for ``--duration``
   seconds: checks stored, schedule lag (``scheduleLagMs`` of each result),
   CPU of the supervisor, all its descendants and the embedded redis-server,
   and peak RSS of each (sampled every 0.5 s).
4. Stops the tree with SIGTERM, prints a table and writes the figures as
   JSON to ``bench/results/``.

Every wait is bounded; processes the benchmark started are stopped by pid.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import html
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
SAMPLE_SECONDS = 0.5
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 30.0
SLICE_SECONDS = 10.0
TARGET_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                   b"Connection: close\r\n\r\nok")
# Settings of the environment that would point the instance elsewhere.
_INHERITED_SETTINGS = ("REDIS_URL", "DATABASE_URL", "DATABASE_PATH", "ENABLE_SYNC_API",
                       "PRIMARY_SYNC_URL", "ADMIN_EMAIL", "ADMIN_PASSWORD", "SECRET_KEY")


# --- the HTTP target -----------------------------------------------------------

class _Responder(asyncio.Protocol):
    """Answers the first request on a connection, then closes it."""

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        if self.buffer.startswith(b"GET /slow"):
            return  # never answered: the check times out (see --slow)
        if b"\r\n\r\n" in self.buffer:
            self.transport.write(TARGET_RESPONSE)
            self.transport.close()
        elif len(self.buffer) > 65536:
            self.transport.close()


def serve_target(port: int) -> None:
    """Run the loopback HTTP target until killed."""
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Responder, "127.0.0.1", port, backlog=4096, reuse_address=True)
        await server.serve_forever()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


# --- endpoints -----------------------------------------------------------------

def seed_endpoints(count: int, url: str, interval: int, timeout: float, slow: int = 0) -> None:
    """Create ``count`` http endpoints (runs in a child with the instance's env).

    The first goes through ``create_endpoint`` (validation, config version);
    the rest copy its row in one bulk insert, which is much faster. ``slow``
    of them, spread evenly, point at a path the target never answers.
    """
    from sqlalchemy import insert, select

    from app import create_app
    from app.extensions import db
    from app.models import Endpoint
    from app.services.endpoints import create_endpoint

    app = create_app(serve="none")
    with app.app_context():
        first = create_endpoint({"name": "bench 1", "checkType": "http", "target": f"{url}/e/1",
                                 "intervalSeconds": interval, "timeoutSeconds": timeout})
        table = Endpoint.__table__
        template = dict(db.session.execute(select(table).where(table.c.id == first.id)).mappings().one())
        template.pop("id")
        every = count // slow if slow else 0
        rows = [{**template, "name": f"bench {n}",
                 "target": f"{url}/slow/{n}" if every and n % every == 0 else f"{url}/e/{n}"}
                for n in range(2, count + 1)]
        for start in range(0, len(rows), 1000):
            db.session.execute(insert(table), rows[start:start + 1000])
        db.session.commit()
        total = db.session.execute(select(db.func.count()).select_from(table)).scalar()
    print(f"{total} endpoints")


# --- the process tree ----------------------------------------------------------

KNOWN_ROLES = frozenset({"supervisor", "redis-server", "clock", "rq worker", "web master", "web worker",
                         "sync master", "sync worker", "gunicorn master", "gunicorn worker"})


def role_of(proc: psutil.Process, supervisor_pid: int) -> str:
    """What a process of the instance is: the launcher names each child it
    forks ("web", "clock", "worker.N"); gunicorn's workers keep "web"."""
    if proc.pid == supervisor_pid:
        return "supervisor"
    name = proc.name()
    if name.startswith("redis-server"):
        return "redis-server"
    if name == "web":
        return "web master" if proc.ppid() == supervisor_pid else "web worker"
    if name.startswith("worker."):
        return "rq worker"
    return name


class Tree:
    """The supervisor and its descendants (the embedded Redis among them)."""

    def __init__(self, supervisor: subprocess.Popen, data_dir: Path):
        self.supervisor = supervisor
        self.data_dir = data_dir
        self.known: dict[int, psutil.Process] = {}
        self.roles: dict[int, str] = {}
        self.redis_socket: str | None = None
        self.lock = threading.Lock()

    def _redis_socket(self) -> str | None:
        # The embedded redis-server is a child of the supervisor; its socket
        # is in the data directory (app.embedded_redis).
        socket_file = self.data_dir / "redis.sock"
        return str(socket_file) if socket_file.exists() else None

    def processes(self) -> dict[int, psutil.Process]:
        """The processes alive now (the same psutil objects from call to call)."""
        found = []
        try:
            top = psutil.Process(self.supervisor.pid)
            found = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
        self.redis_socket = self.redis_socket or self._redis_socket()
        alive = {}
        with self.lock:
            for proc in found:
                known = self.known.get(proc.pid)
                if known is None or known.create_time() != proc.create_time():
                    self.known[proc.pid] = known = proc
                    self.roles.pop(proc.pid, None)
                if self.roles.get(proc.pid) not in KNOWN_ROLES:
                    # A child seen between its fork and its exec still has
                    # the supervisor's command line: ask again next time.
                    try:
                        self.roles[proc.pid] = role_of(proc, self.supervisor.pid)
                    except psutil.Error:
                        continue
                alive[proc.pid] = known
        return alive


def pss_bytes(pid: int) -> int:
    """Proportional set size of a process (shared pages split among their
    sharers), from /proc/PID/smaps_rollup; 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def cpu_seconds(proc: psutil.Process) -> float | None:
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


class Sampler(threading.Thread):
    """Every 0.5 s: RSS and CPU of each process, and the checks queue length."""

    def __init__(self, tree: Tree):
        super().__init__(daemon=True)
        self.tree = tree
        self.peak_rss: dict[int, int] = {}
        self.peak_pss: dict[int, int] = {}
        self.peak_total_pss = 0  # all processes of the instance at one sample
        self.last_cpu: dict[int, float] = {}
        self.queue_lengths: list[tuple[float, int]] = []
        self.stopped = threading.Event()
        self._redis = None

    def run(self):
        while not self.stopped.is_set():
            self.sample()
            self.stopped.wait(SAMPLE_SECONDS)

    def sample(self):
        total_pss = 0
        for pid, proc in self.tree.processes().items():
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    cpu = proc.cpu_times()
            except psutil.Error:
                continue
            pss = pss_bytes(pid)
            self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), rss)
            self.peak_pss[pid] = max(self.peak_pss.get(pid, 0), pss)
            total_pss += pss
            self.last_cpu[pid] = cpu.user + cpu.system
        self.peak_total_pss = max(self.peak_total_pss, total_pss)
        self.queue_lengths.append((time.time(), self._queue_length()))

    def failed_jobs(self) -> int | None:
        """Jobs of the checks queue that raised (RQ's failed job registry)."""
        try:
            return int(self._redis.zcard("rq:failed:checks")) if self._redis is not None else None
        except Exception:
            return None

    def _queue_length(self) -> int:
        try:
            if self._redis is None and self.tree.redis_socket:
                from redis import Redis

                self._redis = Redis(unix_socket_path=self.tree.redis_socket, socket_timeout=1)
            return int(self._redis.llen("rq:queue:checks")) if self._redis is not None else -1
        except Exception:
            self._redis = None
            return -1


# --- one dashboard open --------------------------------------------------------

DASHBOARD_EMAIL = "bench@example.com"
DASHBOARD_PASSWORD = "bench-dashboard-password"
DASHBOARD_REFRESH_SECONDS = 5.0  # the page's poll, app.blueprints.ui.views.REFRESH_SECONDS
_POLL_URL = re.compile(r'id="dashboard-poll"[^>]*?hx-get="([^"]+)"')


class DashboardViewer(threading.Thread):
    """What one browser with the dashboard open costs the instance: signs
    in, loads ``/``, then asks every 5 s for what changed, as the page's
    HTMX poll does (the poll URL taken from the page, and from each answer
    that carries a new one)."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.base = f"http://127.0.0.1:{port}"
        self.stopped = threading.Event()
        self.polls: collections.Counter = collections.Counter()  # status code -> count
        self.errors: list[str] = []

    def run(self):
        import requests

        session = requests.Session()
        try:
            page = session.get(f"{self.base}/login", timeout=30)
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
            signed_in = session.post(f"{self.base}/login", timeout=30, data={
                "csrf_token": token, "email": DASHBOARD_EMAIL, "password": DASHBOARD_PASSWORD})
            poll = _POLL_URL.search(signed_in.text)
            if poll is None:
                raise RuntimeError(f"no dashboard after signing in (HTTP {signed_in.status_code})")
            url = html.unescape(poll.group(1))
        except Exception as exc:
            self.errors.append(f"dashboard: {type(exc).__name__}: {exc}")
            return
        while not self.stopped.wait(DASHBOARD_REFRESH_SECONDS):
            try:
                answer = session.get(self.base + url, headers={"HX-Request": "true"}, timeout=30)
            except Exception as exc:
                self.errors.append(f"poll: {type(exc).__name__}: {exc}")
                continue
            self.polls[answer.status_code] += 1
            if answer.status_code == 200 and (poll := _POLL_URL.search(answer.text)):
                url = html.unescape(poll.group(1))


# --- results -------------------------------------------------------------------

def _db_time(t: float) -> str:
    # How SQLAlchemy stores UTCDateTime on SQLite: naive UTC with microseconds.
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def _parse_db_time(text: str) -> float:
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp()


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def analyse_results(db_path: Path, t0: float, t1: float) -> dict:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute(
            "SELECT checked_at, is_ok, check_metadata, failure_reason, endpoint_id, response_time_ms "
            "FROM response_times "
            "WHERE checked_at >= ? AND checked_at < ?", (_db_time(t0), _db_time(t1))).fetchall()
        total_rows = con.execute("SELECT count(*) FROM response_times").fetchone()[0]
    finally:
        con.close()
    lags, reasons, endpoints = [], collections.Counter(), set()
    slices: dict[int, list[float]] = collections.defaultdict(list)
    failed = 0
    starts = []  # (check start, due time), for the lag after the clock's tick
    for checked_at, is_ok, metadata, reason, endpoint_id, took_ms in rows:
        lag = json.loads(metadata or "{}").get("scheduleLagMs")
        endpoints.add(endpoint_id)
        if lag is not None:
            lags.append(float(lag))
            finished = _parse_db_time(checked_at)
            slices[int((finished - t0) // SLICE_SECONDS)].append(float(lag))
            started = finished - (took_ms or 0.0) / 1000.0
            starts.append((started, started - float(lag) / 1000.0))
        if not is_ok:
            failed += 1
            reasons[reason or "?"] += 1
    lags.sort()
    per_slice = []
    for index in sorted(slices):
        values = sorted(slices[index])
        per_slice.append({"fromSecond": int(index * SLICE_SECONDS), "checks": len(values),
                          "lagP99Ms": percentile(values, 0.99), "lagMaxMs": values[-1]})
    return {
        "checks": len(rows),
        "endpointsChecked": len(endpoints),
        "failed": failed,
        "failureReasons": reasons.most_common(5),
        "lagMinMs": lags[0] if lags else None,
        "lagP50Ms": percentile(lags, 0.50),
        "lagP99Ms": percentile(lags, 0.99),
        "lagMaxMs": lags[-1] if lags else None,
        "lagSlices": per_slice,
        "resultRowsTotal": total_rows,
        "lagAfterTick": lag_after_tick(starts),
    }


def lag_after_tick(starts: list[tuple[float, float]]) -> dict:
    """Estimate how much of the lag comes after the clock's tick.

    The clock claims once a second everything due by then, so part of every
    lag is the wait for the next tick (0 to 1 s). Checks claimed by one tick
    start in one burst; the tick was at (just after) the latest due time in
    that burst, and what remains of the lag is enqueueing, the job's pick-up
    and the wait for a thread. Valid while bursts do not overlap.
    """
    if not starts:
        return {}
    starts.sort()
    bursts, current = [], [starts[0]]
    for item in starts[1:]:
        if item[0] - current[-1][0] > 0.25:
            bursts.append(current)
            current = []
        current.append(item)
    bursts.append(current)
    after, spans = [], []
    for burst in bursts:
        tick = max(due for _, due in burst)
        after.extend(max(0.0, (start - tick) * 1000.0) for start, _ in burst)
        spans.append((burst[-1][0] - burst[0][0]) * 1000.0)
    after.sort()
    spans.sort()
    return {"bursts": len(bursts), "p50Ms": round(percentile(after, 0.5), 1),
            "p99Ms": round(percentile(after, 0.99), 1), "maxMs": round(after[-1], 1),
            "burstSpanP50Ms": round(percentile(spans, 0.5), 1), "burstSpanMaxMs": round(spans[-1], 1),
            # Overlapping bursts, or lags past one tick, mean jobs from several ticks mixed.
            "reliable": spans[-1] < 750.0 and after[-1] < 1000.0}


def count_results(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM response_times").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


# --- the run -------------------------------------------------------------------

def instance_env(args, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED_SETTINGS}
    env.update({
        "DATA_DIR": str(data_dir),
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "SYNC_API_PORT": str(free_port()),
        "WORKER_PROCESSES": str(args.workers),
        "LOG_LEVEL": args.log_level,
        "PYTHONUNBUFFERED": "1",
    })
    if args.batch_size:
        env["CHECK_BATCH_SIZE"] = str(args.batch_size)
    if args.concurrency:
        env["CHECK_CONCURRENCY"] = str(args.concurrency)
    if args.dashboard:
        env.update({"ADMIN_EMAIL": DASHBOARD_EMAIL, "ADMIN_PASSWORD": DASHBOARD_PASSWORD})
    return env


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def start_profiler(pid: int, output: Path, duration: float) -> subprocess.Popen:
    """py-spy sampling ``pid`` and its descendants for ``duration`` seconds."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    output.parent.mkdir(parents=True, exist_ok=True)
    kind = "speedscope" if output.suffix == ".json" else "raw"
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--subprocesses", "--gil", "--rate", "100",
                             "--duration", str(int(duration)), "--format", kind, "--output", str(output)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_leftovers(tree: Tree) -> list[str]:
    """Kill any process of the tree still running after the supervisor stopped."""
    killed = []
    with tree.lock:
        known = dict(tree.known)
    for pid, proc in known.items():
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                proc.kill()
                killed.append(f"{tree.roles.get(pid)} ({pid})")
        except psutil.Error:
            pass
    return killed


def run(args) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-checks-"))
    db_path = data_dir / "monitor.db"
    env = instance_env(args, data_dir)
    python = sys.executable
    log_path = data_dir / "instance.log"
    target = supervisor = tree = sampler = viewer = profiler = None
    failed_jobs = None
    try:
        # 1. The target, in its own process.
        target_port = free_port()
        target = subprocess.Popen([python, "-m", "bench.checks", "--serve-target", str(target_port)], cwd=ROOT)
        wait_listening(target_port, 10)
        url = f"http://127.0.0.1:{target_port}"

        # 2. A fresh database with the endpoints.
        subprocess.run([python, "-m", "app", "init"], cwd=ROOT, env=env, check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
        seeded = time.monotonic()
        subprocess.run([python, "-m", "bench.checks", "--seed", str(args.endpoints), url, str(args.interval),
                        str(args.timeout), str(args.slow)], cwd=ROOT, env=env, check=True, timeout=300)
        print(f"seeded in {time.monotonic() - seeded:.1f} s", flush=True)

        # 3. The instance.
        log = open(log_path, "wb")
        supervisor = subprocess.Popen([python, "-m", "app", "start", "--workers", str(args.workers)],
                                      cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        log.close()
        tree = Tree(supervisor, data_dir)
        sampler = Sampler(tree)
        sampler.start()
        target_proc = psutil.Process(target.pid)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while count_results(db_path) == 0:
            if supervisor.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the instance stored no result; log tail:\n" + _tail(log_path))
            time.sleep(0.5)
        if args.dashboard:
            viewer = DashboardViewer(int(env["PORT"]))
            viewer.start()
        warmup = args.warmup if args.warmup is not None else args.interval + 5
        print(f"first result stored; warming up {warmup:g} s, then measuring {args.duration:g} s", flush=True)
        time.sleep(warmup)

        # 4. The window.
        if args.profile:
            profiler = start_profiler(supervisor.pid, args.profile, args.duration)
        processes = tree.processes()
        t0 = time.time()
        cpu_start = {pid: cpu_seconds(p) for pid, p in processes.items()}
        target_start = cpu_seconds(target_proc)
        machine_start = psutil.cpu_times()
        time.sleep(args.duration)
        t1 = time.time()
        processes_end = tree.processes()
        cpu_end = {pid: cpu_seconds(p) for pid, p in processes_end.items()}
        target_end = cpu_seconds(target_proc)
        machine_end = psutil.cpu_times()
        polls = dict(viewer.polls) if viewer is not None else {}
        # Let batches that were running at t1 store their results.
        time.sleep(args.timeout + 3)
        if profiler is not None:
            profiler.wait(timeout=60)
        failed_jobs = sampler.failed_jobs()
    except BaseException:
        print(f"failed; the instance's data and log stay in {data_dir}", file=sys.stderr)
        raise
    finally:
        if viewer is not None:
            viewer.stopped.set()
        if profiler is not None:
            stop_process(profiler, 30)
        if sampler is not None:
            sampler.stopped.set()
            sampler.join(timeout=5)
        if supervisor is not None:
            stop_process(supervisor, STOP_TIMEOUT_SECONDS)
        leftovers = kill_leftovers(tree) if tree is not None else []
        if target is not None:
            stop_process(target, 5)

    results = analyse_results(db_path, t0, t1)
    window = t1 - t0
    per_process = []
    died = []
    for pid, proc in tree.known.items():
        start = cpu_start.get(pid)
        end = cpu_end.get(pid)
        if end is None:  # gone before t1: its last sample is the best we have
            end = sampler.last_cpu.get(pid)
            if start is not None:
                died.append(f"{tree.roles[pid]} ({pid})")
        if start is None:
            # Started during the window (counted from zero) or never seen in it.
            start = 0.0 if pid in cpu_end and proc.create_time() >= t0 else None
        cpu = (end - start) if start is not None and end is not None else 0.0
        per_process.append({"pid": pid, "role": tree.roles[pid], "cpuSeconds": round(cpu, 3),
                            "peakRssMB": round(sampler.peak_rss.get(pid, 0) / 2**20, 1),
                            "peakPssMB": round(sampler.peak_pss.get(pid, 0) / 2**20, 1)})
    per_process.sort(key=lambda p: -p["cpuSeconds"])
    total_cpu = sum(p["cpuSeconds"] for p in per_process)
    checks = results["checks"]
    roles = {}
    for p in per_process:
        role = roles.setdefault(p["role"], {"role": p["role"], "processes": 0, "cpuSeconds": 0.0,
                                            "peakRssMB": 0.0, "peakPssMB": 0.0})
        role["processes"] += 1
        role["cpuSeconds"] = round(role["cpuSeconds"] + p["cpuSeconds"], 3)
        role["peakRssMB"] = max(role["peakRssMB"], p["peakRssMB"])
        role["peakPssMB"] = max(role["peakPssMB"], p["peakPssMB"])
    for role in roles.values():
        role["cpuMsPerCheck"] = round(role["cpuSeconds"] * 1000 / checks, 3) if checks else None
        role["coreShare"] = round(role["cpuSeconds"] / window, 3)
    busy = _busy(machine_start, machine_end)
    queue = [n for t, n in sampler.queue_lengths if t0 <= t <= t1 and n >= 0]
    return {
        "command": " ".join(["python -m bench.checks", *sys.argv[1:]]),
        "config": {"endpoints": args.endpoints, "intervalSeconds": args.interval, "timeoutSeconds": args.timeout,
                   "workers": args.workers, "slowEndpoints": args.slow, "warmupSeconds": warmup, "durationSeconds": args.duration,
                   "checkBatchSize": args.batch_size or "default", "checkConcurrency": args.concurrency or "default",
                   "logLevel": args.log_level, "dashboardOpen": args.dashboard},
        "code": _code_version(),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "cpu": _cpu_model()},
        "windowSeconds": round(window, 2),
        "expectedChecksPerSecond": round(args.endpoints / args.interval, 1),
        "checksPerSecond": round(checks / window, 1),
        **{k: v for k, v in results.items()},
        "cpuSecondsTotal": round(total_cpu, 3),
        "cpuMsPerCheck": round(total_cpu * 1000 / checks, 3) if checks else None,
        "instanceCoreShare": round(total_cpu / window, 3),
        "machineBusyPercent": busy,
        # Both cores' busy share that was neither the instance nor the target:
        # other work on the shared machine.
        "otherBusyPercent": round(max(0.0, busy - 100.0 * (total_cpu + max(0.0, (target_end or 0) - (target_start or 0)))
                                      / window / (os.cpu_count() or 1)), 1),
        "loadAverage": [round(x, 2) for x in os.getloadavg()],
        "targetCpuSeconds": round(target_end - target_start, 3) if None not in (target_end, target_start) else None,
        "peakRssMB": max((p["peakRssMB"] for p in per_process), default=0.0),
        "peakPssTotalMB": round(sampler.peak_total_pss / 2**20, 1),
        "dashboardPolls": polls if args.dashboard else None,
        "dashboardErrors": viewer.errors[:5] if viewer is not None else [],
        "profile": str(args.profile) if args.profile else None,
        "failedCheckJobs": failed_jobs,
        "checksQueueLength": {"max": max(queue, default=None), "mean": round(sum(queue) / len(queue), 1)
                              if queue else None},
        "roles": sorted(roles.values(), key=lambda r: -r["cpuSeconds"]),
        "processes": per_process,
        "processesGoneDuringWindow": died,
        "leftoversKilled": leftovers,
        "dataDir": str(data_dir) if args.keep else None,
        "_data_dir": data_dir,
    }


def _code_version() -> dict:
    """The commit measured, and whether app/ or workers/ differ from it."""
    def git(*argv):
        try:
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    changed = git("status", "--porcelain", "--", "app", "workers", "migrations")
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommittedFiles": None if changed is None else len(changed.splitlines())}


def _busy(start, end) -> float:
    """Percent of all cores busy (not idle or iowait) between two snapshots."""
    total = sum(end) - sum(start)
    idle = (end.idle - start.idle) + (getattr(end, "iowait", 0) - getattr(start, "iowait", 0))
    return round(100.0 * (total - idle) / total, 1) if total > 0 else 0.0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def print_report(report: dict) -> None:
    def fmt(value, unit=""):
        return "-" if value is None else f"{value:g}{unit}" if isinstance(value, (int, float)) else str(value)

    c = report["config"]
    print()
    slow = f" ({c['slowEndpoints']} never answered)" if c["slowEndpoints"] else ""
    print(f"{c['endpoints']} http endpoints{slow} every {c['intervalSeconds']} s, {c['workers']} worker process(es), "
          f"{report['windowSeconds']:g} s window after {c['warmupSeconds']:g} s warm-up")
    rows = [
        ("checks/s (expected)", f"{fmt(report['checksPerSecond'])} ({fmt(report['expectedChecksPerSecond'])})"),
        ("checks in window", fmt(report["checks"])),
        ("endpoints checked", f"{report['endpointsChecked']} of {c['endpoints']}"),
        ("failed checks (failed check jobs)", f"{fmt(report['failed'])} ({fmt(report['failedCheckJobs'])})"),
        ("schedule lag min / p50 / p99 / max", f"{fmt(report['lagMinMs'])} / {fmt(report['lagP50Ms'])} / "
                                               f"{fmt(report['lagP99Ms'])} / {fmt(report['lagMaxMs'], ' ms')}"),
        ("lag after the tick p50 / p99 / max (est.)",
         f"{fmt(report['lagAfterTick'].get('p50Ms'))} / {fmt(report['lagAfterTick'].get('p99Ms'))} / "
         f"{fmt(report['lagAfterTick'].get('maxMs'), ' ms')}"
         + ("" if report["lagAfterTick"].get("reliable", True) else " (bursts overlap: unreliable)")),
        ("CPU per check, whole instance", fmt(report["cpuMsPerCheck"], " ms")),
        ("instance CPU (cores busy)", fmt(report["instanceCoreShare"])),
        ("machine busy (all cores)", fmt(report["machineBusyPercent"], " %")),
        ("  of which other work, load average", f"{fmt(report['otherBusyPercent'], ' %')}, "
                                              f"{' '.join(str(x) for x in report['loadAverage'])}"),
        ("target CPU (not counted)", fmt(report["targetCpuSeconds"], " s")),
        ("peak RSS, largest process", fmt(report["peakRssMB"], " MB")),
        ("peak PSS, whole instance", fmt(report["peakPssTotalMB"], " MB")),
        ("dashboard polls (HTTP status: count)", "not open" if report["dashboardPolls"] is None else
         ", ".join(f"{code}: {n}" for code, n in sorted(report["dashboardPolls"].items())) or "none"),
        ("checks queue length max/mean", f"{fmt(report['checksQueueLength']['max'])} / "
                                         f"{fmt(report['checksQueueLength']['mean'])}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print()
    print(f"  {'process':<16} {'n':>2} {'CPU s':>8} {'ms/check':>9} {'cores':>6} {'peak RSS MB':>12} "
          f"{'peak PSS MB':>12}")
    for role in report["roles"]:
        print(f"  {role['role']:<16} {role['processes']:>2} {role['cpuSeconds']:>8.2f} "
              f"{fmt(role['cpuMsPerCheck']):>9} {role['coreShare']:>6.3f} {role['peakRssMB']:>12.1f} "
              f"{role['peakPssMB']:>12.1f}")
    print()
    print("  lag by 10 s slice (checks, p99 ms, max ms): " + ", ".join(
        f"{s['fromSecond']}s: {s['checks']}/{fmt(s['lagP99Ms'])}/{fmt(s['lagMaxMs'])}" for s in report["lagSlices"]))
    if report["failureReasons"]:
        print("  failure reasons:", report["failureReasons"])
    if report["dashboardErrors"]:
        print("  dashboard errors:", report["dashboardErrors"])
    if report["profile"]:
        print(f"  profiled with py-spy (so the CPU figures include its sampling): {report['profile']}")
    if report["processesGoneDuringWindow"]:
        print("  processes gone during the window:", ", ".join(report["processesGoneDuringWindow"]))
    if report["leftoversKilled"]:
        print("  killed after stop:", ", ".join(report["leftoversKilled"]))


def default_output(args) -> Path:
    name = f"checks-{args.endpoints}"
    if args.interval != 10:
        name += f"-i{args.interval}"
    if args.workers != 1:
        name += f"-w{args.workers}"
    if args.slow:
        name += f"-slow{args.slow}"
    return RESULTS_DIR / f"{name}.json"


def build_parser() -> argparse.ArgumentParser:
    """The options of one run (``bench.scale`` builds its runs with them too)."""
    parser = argparse.ArgumentParser(prog="python -m bench.checks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000, help="http endpoints to create (default 1000)")
    parser.add_argument("--interval", type=int, default=10, help="check interval in seconds, >= 5 (default 10)")
    parser.add_argument("--duration", type=float, default=60, help="measured seconds (default 60)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before measuring (default interval + 5)")
    parser.add_argument("--workers", type=int, default=1, help="WORKER_PROCESSES (default 1)")
    parser.add_argument("--timeout", type=float, default=2.0, help="check timeout in seconds (default 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="CHECK_BATCH_SIZE (default: the app's)")
    parser.add_argument("--concurrency", type=int, default=None, help="CHECK_CONCURRENCY (default: the app's)")
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the instance (default INFO)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default bench/results/checks-<N>[-i<interval>][-w<workers>].json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary DATA_DIR")
    parser.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                        help="no dashboard open (by default one signed-in dashboard polls every 5 s)")
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE",
                        help="record the window with py-spy (every process of the tree) into FILE: "
                             "collapsed stacks, or speedscope JSON if FILE ends in .json")
    parser.add_argument("--serve-target", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--slow", type=int, default=0,
                        help="of the endpoints, how many never get an answer and time out (default 0)")
    parser.add_argument("--seed", nargs=5, metavar=("N", "URL", "INTERVAL", "TIMEOUT", "SLOW"),
                        help=argparse.SUPPRESS)
    return parser


def check_args(parser: argparse.ArgumentParser, args) -> None:
    if args.interval < 5 or args.endpoints < 1 or args.duration <= 0 or not 1 <= args.workers <= 64:
        parser.error("need --interval >= 5, --endpoints >= 1, --duration > 0, 1 <= --workers <= 64")
    if not 0 <= args.slow <= args.endpoints // 2:
        parser.error("--slow must be from 0 to half of --endpoints")


def measure(args) -> dict:
    """One run: measure, print the table, write the JSON; returns the report."""
    report = run(args)
    data_dir = report.pop("_data_dir")
    print_report(report)
    output = args.output or default_output(args)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {output}")
    if args.keep:
        print(f"kept {data_dir}")
    else:
        shutil.rmtree(data_dir, ignore_errors=True)
    return report


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.serve_target:
        serve_target(args.serve_target)
        return 0
    if args.seed:
        count, url, interval, timeout, slow = args.seed
        seed_endpoints(int(count), url, int(interval), float(timeout), int(slow))
        return 0
    check_args(parser, args)
    measure(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
