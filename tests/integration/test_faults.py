"""Faults the monitor must ride out (issue 10, part 1), with real process
trees: a killed embedded Redis, a crash of the whole launcher, a second
instance on a data directory in use, an external Redis restarted mid-run,
a full or read-only data directory, and a chunked body over the limit.

"Nothing lost" is counted, not assumed: a loopback HTTP server counts the
checks that reached it, and every one of them must have its result in the
SQLite database, by id, along with every result stored before the fault.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
import requests

from app.embedded_redis import EmbeddedRedis, redis_server_binary
from app.services.queues import RedisOutage
from tests.conftest import ROOT
from tests.peers.ports import reserve_port
from tests.peers.process import ADMIN, MonitorProcess, monitor_env, wait_until

pytestmark = pytest.mark.process_tree

JOIN_SECRET = "faults-join-secret-0123456789"
INTERVAL = 5
SLOW_SECONDS = 2.5  # the slow endpoint answers after this: a check is in flight most of the time
RESULT_WAIT = 45


class CountingEndpoint:
    """A loopback HTTP server that counts the checks it answered, per path;
    paths under /slow answer after SLOW_SECONDS."""

    def __init__(self):
        self.answered: dict[str, int] = {}
        self.in_flight = 0
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with endpoint.lock:
                    endpoint.in_flight += 1
                try:
                    if self.path.startswith("/slow"):
                        time.sleep(SLOW_SECONDS)
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                finally:
                    with endpoint.lock:
                        endpoint.in_flight -= 1
                        endpoint.answered[self.path] = endpoint.answered.get(self.path, 0) + 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", reserve_port()), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def count(self, path: str) -> int:
        with self.lock:
            return self.answered.get(path, 0)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    server = CountingEndpoint()
    yield server
    server.close()


def add_endpoint(monitor: MonitorProcess, name: str, url: str, timeout: int = 4) -> int:
    created = requests.post(f"{monitor.web}/api/v1/endpoints", auth=ADMIN, timeout=30, json={
        "name": name, "checkType": "http", "target": url, "intervalSeconds": INTERVAL, "timeoutSeconds": timeout})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def result_ids(data_dir: Path, endpoint_id: int | None = None) -> set[int]:
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'monitor.db'}?mode=ro", uri=True, timeout=10)) as db:
        if endpoint_id is None:
            return {row[0] for row in db.execute("SELECT id FROM response_times")}
        return {row[0] for row in db.execute("SELECT id FROM response_times WHERE endpoint_id = ?", (endpoint_id,))}


def checked_since(data_dir: Path, endpoint_id: int, moment: float) -> int:
    """How many of the endpoint's results were checked after ``moment`` (unix time)."""
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'monitor.db'}?mode=ro", uri=True, timeout=10)) as db:
        (count,) = db.execute("SELECT count(*) FROM response_times WHERE endpoint_id = ? "
                              "AND julianday(checked_at) > julianday(?, 'unixepoch')",
                              (endpoint_id, moment)).fetchone()
    return count


def redis_servers(data_dir: Path) -> list[psutil.Process]:
    """Live redis-server processes working in ``data_dir``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if (proc.name().startswith("redis-server") and proc.status() != psutil.STATUS_ZOMBIE
                    and proc.cwd() == str(data_dir.resolve())):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def children_by_command(monitor: MonitorProcess) -> dict[str, int]:
    """The clock's and workers' pids, by what they run (the launcher forks
    them and names them "clock" and "worker.N")."""
    found = {}
    for proc in psutil.Process(monitor.process.pid).children():
        name = proc.name()
        for module, prefix in (("workers.clock", "clock"), ("workers.worker", "worker.")):
            if name.startswith(prefix):
                found.setdefault(module, []).append(proc.pid)
    return {module: sorted(pids) for module, pids in found.items()}


def log_since(monitor: MonitorProcess, offset: int) -> str:
    return monitor.log.read_text(errors="replace")[offset:]


def log_size(monitor: MonitorProcess) -> int:
    return len(monitor.log.read_text(errors="replace"))


def assert_every_check_was_stored(monitor, server, path, endpoint_id, before: set[int]):
    """Every check the server answered has its result stored, and every
    result stored before is still there."""
    answered = server.count(path)
    wait_until(lambda: len(result_ids(monitor.data_dir, endpoint_id)) >= answered, 20,
               lambda: f"{answered} checks of {path} answered, "
                       f"{len(result_ids(monitor.data_dir, endpoint_id))} stored; log:\n{monitor.tail()}")
    after = result_ids(monitor.data_dir, endpoint_id)
    assert before <= after


def ready(monitor: MonitorProcess) -> bool:
    return requests.get(f"{monitor.web}/readyz", timeout=10).status_code == 200


class Tree(MonitorProcess):
    @property
    def data_dir(self) -> Path:
        return Path(self.env["DATA_DIR"]).resolve()


def start_tree(tmp_path: Path, name: str, **settings) -> Tree:
    return Tree(monitor_env(tmp_path / name, admin=ADMIN, **settings), tmp_path / f"{name}.log").start()


# --- a killed embedded Redis ---------------------------------------------------------


def test_a_killed_embedded_redis_is_restarted_on_its_socket_and_no_result_is_lost(tmp_path, endpoint):
    """SIGKILL the embedded redis-server while a check is in flight, twice:
    the launcher restarts it on the same socket (1 s, then 2 s later), the
    workers and the clock stay up (same pids) and say so in a line each,
    the in-flight check is stored, and checks go on."""
    monitor = start_tree(tmp_path, "data")
    try:
        slow = add_endpoint(monitor, "slow", endpoint.url("/slow"))
        quick = add_endpoint(monitor, "quick", endpoint.url("/quick"))
        wait_until(lambda: endpoint.count("/slow") >= 2 and endpoint.count("/quick") >= 2, RESULT_WAIT,
                   lambda: f"no checks; log:\n{monitor.tail()}")
        wait_until(lambda: ready(monitor), 30, "never ready")
        processes = children_by_command(monitor)
        before = result_ids(monitor.data_dir)
        socket = monitor.data_dir / "redis.sock"
        offset = log_size(monitor)

        for _ in range(2):
            [server] = redis_servers(monitor.data_dir)
            assert int((monitor.data_dir / "redis.pid").read_text()) == server.pid
            wait_until(lambda: endpoint.in_flight > 0, 20, "no check in flight", interval=0.05)
            server.kill()
            wait_until(lambda killed=server.pid: [p.pid for p in redis_servers(monitor.data_dir)] not in ([], [killed]),
                       30, lambda: f"no new redis-server; log:\n{monitor.tail()}", interval=0.1)
            wait_until(lambda: ready(monitor), 30, lambda: f"not ready again; log:\n{monitor.tail()}")

        [server] = redis_servers(monitor.data_dir)
        assert f"unixsocket:{socket}" in " ".join(server.cmdline())
        # Checks go on: two more rounds of each, scheduled after the restart.
        recovered_at = time.time()
        wait_until(lambda: checked_since(monitor.data_dir, slow, recovered_at) >= 2
                   and checked_since(monitor.data_dir, quick, recovered_at) >= 2, RESULT_WAIT,
                   lambda: f"checks did not go on after the restart; log:\n{monitor.tail()}")
        assert children_by_command(monitor) == processes, "a worker or the clock restarted"
        for path, endpoint_id in (("/slow", slow), ("/quick", quick)):
            assert_every_check_was_stored(monitor, endpoint, path, endpoint_id, before & result_ids(
                monitor.data_dir, endpoint_id))

        log = log_since(monitor, offset)
        assert "restarting it in 1 s" in log and "restarting it in 2 s" in log, log
        assert "Traceback" not in log, log
        for pid in [*processes["workers.clock"], *processes["workers.worker"]]:
            lines = [line for line in log.splitlines() if f"(pid {pid}): Redis" in line]
            # per outage at most: unreachable, reachable again
            assert len(lines) <= 4, "\n".join(lines)
    finally:
        monitor.stop()


# --- a crash of the whole launcher ---------------------------------------------------


def test_after_sigkill_of_the_launcher_and_a_restart_one_redis_server_runs(tmp_path, endpoint):
    """SIGKILL of the launcher's whole process group: its redis-server (in a
    group of its own) goes too, since it dies with the launcher. An orphan
    left by an older start (planted here: a redis-server on the data
    directory's configuration, in a session of its own) is stopped by the
    next start, which then runs exactly one redis-server there, and keeps
    every result."""
    monitor = start_tree(tmp_path, "data")
    data_dir = monitor.data_dir
    try:
        quick = add_endpoint(monitor, "quick", endpoint.url("/quick"))
        wait_until(lambda: len(result_ids(data_dir, quick)) >= 2, RESULT_WAIT,
                   lambda: f"no results; log:\n{monitor.tail()}")
        monitor.kill()
        wait_until(lambda: not redis_servers(data_dir), 15, "the redis-server outlived its launcher")
        before = result_ids(data_dir)

        orphan = subprocess.Popen([redis_server_binary(), str(data_dir / "redis.conf")], cwd=data_dir,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_until(lambda: (data_dir / "redis.pid").exists()
                       and int((data_dir / "redis.pid").read_text()) == orphan.pid, 10, "the orphan never started")

            monitor.start()
            assert orphan.wait(timeout=5) == 0  # stopped with SIGTERM: it wrote out its data and exited
        finally:
            if orphan.poll() is None:
                orphan.kill()
        servers = redis_servers(data_dir)
        assert [p.pid for p in servers] == [int((data_dir / "redis.pid").read_text())]
        assert f"stopping redis-server pid {orphan.pid}" in monitor.tail(10**6)

        resumed = time.time()
        wait_until(lambda: checked_since(data_dir, quick, resumed) >= 1, RESULT_WAIT,
                   lambda: f"no results after the restart; log:\n{monitor.tail()}")
        assert before <= result_ids(data_dir)
    finally:
        monitor.stop()
    assert not redis_servers(data_dir)


def test_a_data_directory_too_long_for_a_socket_address_gets_a_short_private_one(tmp_path):
    data_dir = tmp_path / ("d" * 120)
    data_dir.mkdir()
    redis_server = EmbeddedRedis(data_dir)
    assert len(str(redis_server.socket_file)) <= 100
    assert EmbeddedRedis(data_dir).socket_file == redis_server.socket_file  # the same at every start
    assert redis_server.socket_file.parent.stat().st_mode & 0o777 == 0o700
    try:
        redis_server.start()
        assert redis_server.wait_until_answering(timeout=20)
        assert int((data_dir / "redis.pid").read_text()) == redis_server.pid
    finally:
        redis_server.stop()
        with contextlib.suppress(OSError):
            redis_server.socket_file.parent.rmdir()


# --- two instances, one data directory -----------------------------------------------


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """One steady instance, for the tests that only look at it."""
    tmp_path = tmp_path_factory.mktemp("running")
    monitor = start_tree(tmp_path, "data", SYNC_SHARED_SECRET=JOIN_SECRET)
    yield monitor
    monitor.stop()


def start_briefly(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "start"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_a_second_instance_on_a_data_directory_in_use_stops_naming_both(running, tmp_path):
    second = monitor_env(running.data_dir, admin=ADMIN)
    refused = start_briefly(second)
    assert refused.returncode == 2, refused.stderr[-3000:]
    message = refused.stderr
    assert f"the data directory {running.data_dir} is in use by another instance" in message
    holder = f"pid {running.process.pid}, web port {running.env['PORT']}, sync API port {running.env['SYNC_API_PORT']}"
    assert holder in message
    assert f"web port {second['PORT']}, sync API port {second['SYNC_API_PORT']}" in message
    assert ready(running) and len(redis_servers(running.data_dir)) == 1


def test_the_data_directory_follows_database_path(running):
    """DATA_DIR unset: the data directory is DATABASE_PATH's, so a second
    instance with its database beside the running one's is refused too
    (before, both would have used ./data and one embedded Redis)."""
    env = monitor_env(running.data_dir, admin=ADMIN, DATABASE_PATH=str(running.data_dir / "second.db"))
    del env["DATA_DIR"]
    refused = start_briefly(env)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert f"the data directory {running.data_dir} is in use" in refused.stderr
    assert not (running.data_dir / "second.db").exists()


def test_database_path_sets_the_data_directory_only_without_data_dir_or_database_url(tmp_path):
    from app.config import load_settings

    assert load_settings({"DATABASE_PATH": str(tmp_path / "a" / "x.db")}).data_dir == tmp_path / "a"
    assert load_settings({"DATABASE_PATH": str(tmp_path / "a" / "x.db"),
                          "DATA_DIR": str(tmp_path / "b")}).data_dir == tmp_path / "b"
    assert load_settings({"DATABASE_PATH": str(tmp_path / "a" / "x.db"),
                          "DATABASE_URL": "postgresql://db/monitor"}).data_dir == Path("data").resolve()


# --- an external Redis restarted -----------------------------------------------------


def test_checks_resume_by_themselves_after_an_external_redis_restarts(tmp_path, endpoint):
    """REDIS_URL names a redis-server of the test's own (no persistence: it
    comes back empty). While it is down for 15 s, workers and the clock
    wait quietly (a line each, no traceback, same pids); once it is back
    they register again, the clock takes its lease, checks resume, and
    every check that reached the endpoint is stored."""
    socket = tmp_path / "r.sock"
    command = [redis_server_binary(), "--port", "0", "--unixsocket", str(socket), "--save", "",
               "--appendonly", "no", "--dir", str(tmp_path)]

    def start_redis():
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(socket.exists, 10, "the external redis-server did not start", interval=0.05)
        return process

    redis_server = start_redis()
    monitor = start_tree(tmp_path, "data", REDIS_URL=f"unix://{socket}")
    try:
        slow = add_endpoint(monitor, "slow", endpoint.url("/slow"))
        wait_until(lambda: endpoint.count("/slow") >= 2, RESULT_WAIT, lambda: f"no checks; log:\n{monitor.tail()}")
        wait_until(lambda: ready(monitor), 30, "never ready")
        processes = children_by_command(monitor)
        before = result_ids(monitor.data_dir, slow)
        offset = log_size(monitor)

        wait_until(lambda: endpoint.in_flight > 0, 20, "no check in flight", interval=0.05)
        redis_server.kill()
        redis_server.wait()
        time.sleep(15)
        outage_log = log_since(monitor, offset)
        assert endpoint.in_flight == 0
        redis_server = start_redis()
        back = time.time()

        wait_until(lambda: ready(monitor), 30, lambda: f"not ready again; log:\n{monitor.tail()}")
        wait_until(lambda: checked_since(monitor.data_dir, slow, back) >= 2, RESULT_WAIT,
                   lambda: f"checks did not resume after Redis came back; log:\n{monitor.tail()}")
        assert children_by_command(monitor) == processes, "a worker or the clock restarted"
        assert_every_check_was_stored(monitor, endpoint, "/slow", slow, before)

        assert "Traceback" not in outage_log, outage_log
        for pid in [*processes["workers.clock"], *processes["workers.worker"]]:
            lines = [line for line in outage_log.splitlines() if f"(pid {pid}): Redis" in line]
            assert len(lines) == 1 and "is unreachable" in lines[0], outage_log
        assert len(outage_log.splitlines()) < 20, outage_log  # the issue saw 70 lines a second
        assert "reachable again" in log_since(monitor, offset)
    finally:
        monitor.stop()
        redis_server.kill()


# --- a full or read-only data directory ----------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A tmpfs of its own mounted at ``path`` (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_a_full_data_directory_is_a_clear_error_at_start(tmp_path, existing):
    """A new data directory fails on writing the secret key, an existing
    one (its key already there) on the lock file: both exit 2 naming it."""
    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        data_dir = disk / "data"
        if existing:
            data_dir.mkdir()
            (data_dir / "secret_key").write_text("an-existing-secret-key-0123456789")
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 65536)
        result = start_briefly(monitor_env(data_dir, admin=ADMIN), timeout=30)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"the data directory {data_dir} is full (No space left on device)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_nearly_full_data_directory_is_refused_before_anything_is_written(tmp_path):
    with tmpfs(tmp_path / "disk", "size=4m") as disk:
        data_dir = disk / "data"
        result = start_briefly(monitor_env(data_dir, admin=ADMIN), timeout=30)
        assert not (data_dir / "monitor.db").exists()
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"the data directory {data_dir} has only" in result.stderr and "KiB free" in result.stderr


def test_a_read_only_data_directory_is_a_clear_error_at_start(tmp_path):
    with tmpfs(tmp_path / "readonly", "size=1m,ro") as readonly:
        data_dir = readonly / "data"
        result = start_briefly(monitor_env(data_dir, admin=ADMIN), timeout=30)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"cannot create the data directory {data_dir}: Read-only file system" in result.stderr
    assert "Traceback" not in result.stderr


# --- a chunked body over the limit ---------------------------------------------------


def chunked(size: int, chunk: int = 64 * 1024):
    """A JSON object body of ``size`` bytes, sent in chunks (no Content-Length)."""
    head, tail = b'{"name": "', b'"}'
    filler = size - len(head) - len(tail)
    yield head
    while filler > 0:
        part = min(chunk, filler)
        yield b"x" * part
        filler -= part
    yield tail


@pytest.mark.parametrize("api", ["json", "sync"])
def test_a_chunked_body_over_a_mebibyte_is_a_413(running, api):
    if api == "json":
        url, headers = f"{running.web}/api/v1/endpoints", {}
        auth = ADMIN
    else:
        url, headers = f"{running.sync}/sync/api/vote", {"X-Cluster-Secret": JOIN_SECRET}
        auth = None
    headers["Content-Type"] = "application/json"
    too_big = requests.post(url, data=chunked(1024 * 1024 + 4096), headers=headers, auth=auth, timeout=30)
    assert too_big.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in too_big.request.headers
    assert too_big.status_code == 413, too_big.text
    assert too_big.json()["error"] == "request_entity_too_large"

    small = requests.post(url, data=chunked(200), headers=headers, auth=auth, timeout=30)
    assert small.status_code == 400 and small.json()["error"] == "validation_error", small.text


# --- reporting an outage -------------------------------------------------------------


def test_an_outage_is_reported_once_a_minute_and_once_when_it_ends(caplog):
    now = [1000.0]
    outage = RedisOutage("worker (pid 1)", clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="app.services.queues"):
        for _ in range(150):  # a failed call a second for 150 s
            outage.failed(ConnectionError("Error 111 connecting to /data/redis.sock. Connection refused."))
            now[0] += 1
        outage.recovered()
        outage.recovered()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4, lines
    assert "is unreachable" in lines[0] and "Connection refused" in lines[0]
    assert "still unreachable after 60 s" in lines[1] and "still unreachable after 120 s" in lines[2]
    assert "reachable again after 150 s" in lines[3]
    assert not outage.ongoing
