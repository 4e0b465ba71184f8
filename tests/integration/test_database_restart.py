"""The PostgreSQL server restarted under a running monitor: checks resume
by themselves, the web UI is ready again, and every check that reached the
endpoint has its result stored, once.

The monitor runs as a real process tree with DATABASE_URL naming a database
of this test's own on the TEST_DATABASE_URL server and REDIS_URL the server
Redis (TEST_REDIS_URL). The server is stopped for OUTAGE_SECONDS and started
again with ``pg_ctlcluster``, so this needs root and a local cluster; the
server is running again when the test ends, however it ends, since other
tests share it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from tests.conftest import POSTGRES_URL
from tests.integration.test_faults import (RESULT_WAIT, CountingEndpoint, add_endpoint, children_by_command,
                                          log_since, log_size)
from tests.peers.process import ADMIN, MonitorProcess, monitor_env, wait_until

# Real processes (or tools) whatever the database: left out of the PostgreSQL pass.
pytestmark = [pytest.mark.process_tree, pytest.mark.restarts_postgresql]

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
OUTAGE_SECONDS = 10
POSTGRES_BACK_TIMEOUT = 60


def postgres_cluster() -> tuple[str, str]:
    """The local cluster's version and name, for ``pg_ctlcluster`` (skips without one)."""
    if not POSTGRES_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    if os.geteuid() != 0:
        pytest.skip("restarting the PostgreSQL server needs root")
    if not shutil.which("pg_ctlcluster") or not shutil.which("pg_isready"):
        pytest.skip("pg_ctlcluster or pg_isready is missing: no local PostgreSQL cluster to restart")
    versions = sorted(Path("/etc/postgresql").glob("*/main"), key=lambda p: int(p.parent.name))
    if not versions:
        pytest.skip("no PostgreSQL cluster under /etc/postgresql")
    return versions[-1].parent.name, "main"


def postgres_answers() -> bool:
    url = make_url(POSTGRES_URL)
    return subprocess.run(["pg_isready", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)],
                          capture_output=True, check=False).returncode == 0


def pg_ctlcluster(version: str, name: str, action: str) -> None:
    subprocess.run(["pg_ctlcluster", version, name, action], check=True, capture_output=True, timeout=120)


@pytest.fixture
def monitor_database():
    """A database of the test's own on the TEST_DATABASE_URL server, dropped at the end."""
    cluster = postgres_cluster()
    name = f"monitor_restart_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    server = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield cluster, make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        if not postgres_answers():
            pg_ctlcluster(*cluster, "start")
        wait_until(postgres_answers, POSTGRES_BACK_TIMEOUT, "the PostgreSQL server did not come back")
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


@pytest.fixture
def server_redis():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip(f"no Redis server at {REDIS_URL}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


def stored(database_url: str, endpoint_id: int) -> list[int]:
    """The ids of the endpoint's stored results (a list: a duplicate would show)."""
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(
                text("SELECT id FROM response_times WHERE endpoint_id = :e ORDER BY id"), {"e": endpoint_id})]
    finally:
        engine.dispose()


def checked_since(database_url: str, endpoint_id: int, moment: float) -> int:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM response_times WHERE endpoint_id = :e "
                                     "AND checked_at > to_timestamp(:m)"), {"e": endpoint_id, "m": moment}).scalar()
    finally:
        engine.dispose()


def pause(database_url: str) -> None:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE endpoints SET is_paused = true"))
    finally:
        engine.dispose()


def readyz(monitor: MonitorProcess) -> requests.Response:
    return requests.get(f"{monitor.web}/readyz", timeout=10)


def test_checks_resume_by_themselves_after_the_postgresql_server_restarts(tmp_path, monitor_database, server_redis):
    """Stop the PostgreSQL server for OUTAGE_SECONDS while checks run, then
    start it again: /readyz answers 503 naming the database meanwhile and
    200 after; the workers and the clock keep their pids; checks resume
    within a bounded time; every check the endpoint answered, those made
    during the outage included, has its result stored exactly once; and the
    log says so in a bounded number of lines."""
    cluster, database_url = monitor_database
    endpoint = CountingEndpoint()
    monitor = MonitorProcess(monitor_env(tmp_path / "data", admin=ADMIN, DATABASE_URL=database_url,
                                         REDIS_URL=server_redis), tmp_path / "monitor.log")
    monitor.start()
    try:
        quick = add_endpoint(monitor, "quick", endpoint.url("/quick"))
        slow = add_endpoint(monitor, "slow", endpoint.url("/slow"))
        wait_until(lambda: endpoint.count("/quick") >= 2 and endpoint.count("/slow") >= 2, RESULT_WAIT,
                   lambda: f"no checks; log:\n{monitor.tail()}")
        wait_until(lambda: readyz(monitor).status_code == 200, 30, lambda: f"never ready; log:\n{monitor.tail()}")
        processes = children_by_command(monitor)
        before = {path: endpoint.count(path) for path in ("/quick", "/slow")}
        offset = log_size(monitor)

        wait_until(lambda: endpoint.in_flight > 0, 20, "no check in flight", interval=0.05)
        stopped_at = time.monotonic()
        pg_ctlcluster(*cluster, "stop")
        try:
            wait_until(lambda: readyz(monitor).status_code == 503, 15, "/readyz stayed 200 with the database down")
            during = readyz(monitor)
            assert during.status_code == 503 and "database" in during.json()["failing"], during.text
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped_at)))
            answered_during = {path: endpoint.count(path) - before[path] for path in before}
        finally:
            pg_ctlcluster(*cluster, "start")
        wait_until(postgres_answers, POSTGRES_BACK_TIMEOUT, "the PostgreSQL server did not come back")
        outage = time.monotonic() - stopped_at
        back = time.time()

        wait_until(lambda: readyz(monitor).status_code == 200, 60,
                   lambda: f"not ready again: {readyz(monitor).text}; log:\n{monitor.tail()}")
        for endpoint_id in (quick, slow):
            wait_until(lambda e=endpoint_id: checked_since(database_url, e, back) >= 2, RESULT_WAIT,
                       lambda: f"checks did not resume after the database came back; log:\n{monitor.tail()}")
        assert children_by_command(monitor) == processes, "a worker or the clock restarted"

        # Nothing lost: pause both endpoints (no new checks), let the last
        # ones finish, then every check answered has exactly one result.
        pause(database_url)
        time.sleep(2)  # a check claimed just before the pause still runs
        wait_until(lambda: endpoint.in_flight == 0, 20, "checks still running after the pause")
        for path, endpoint_id in (("/quick", quick), ("/slow", slow)):
            wait_until(lambda p=path, e=endpoint_id: len(stored(database_url, e)) >= endpoint.count(p), 30,
                       lambda p=path, e=endpoint_id: f"{endpoint.count(p)} checks of {p} answered, "
                       f"{len(stored(database_url, e))} stored; log:\n{monitor.tail()}")
            ids = stored(database_url, endpoint_id)
            assert len(ids) == len(set(ids)) == endpoint.count(path), (path, len(ids), endpoint.count(path))
        # At least the check in flight when the server stopped was answered
        # during the outage; its result could only be stored after it.
        assert answered_during["/slow"] >= 1, answered_during

        log = log_since(monitor, offset)
        assert log.count("Traceback") <= 2, log
        assert len([line for line in log.splitlines() if not line.startswith("127.0.0.1 - ")]) < 40, log
        for pid in [*processes["workers.clock"], *processes["workers.worker"]]:
            # per process at most: unreachable, reachable again
            assert len([line for line in log.splitlines() if f"(pid {pid}): the database" in line]) <= 2, log
        print(f"outage {outage:.1f} s; answered during it {answered_during}; "
              f"stored quick {len(stored(database_url, quick))} of {endpoint.count('/quick')} answered, "
              f"slow {len(stored(database_url, slow))} of {endpoint.count('/slow')}; log lines {len(log.splitlines())}")
    finally:
        monitor.stop()
        endpoint.close()


def test_a_database_outage_names_the_database_without_its_password(caplog):
    from sqlalchemy.exc import OperationalError

    from app.services.database_outage import DatabaseOutage

    now = [0.0]
    outage = DatabaseOutage("clock (pid 1)", "postgresql://monitor:s3cret@db:5432/monitor", clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="app.services.queues"):
        for _ in range(90):  # a failed tick a second for 90 s
            outage.failed(OperationalError("SELECT 1", {}, Exception("connection refused")))
            now[0] += 1
        outage.recovered()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("clock (pid 1): the database at postgresql://monitor:***@db:5432/monitor "
                               "is unreachable (OperationalError: ")
    assert "s3cret" not in "\n".join(lines)
    assert "reachable again after 90 s" in lines[2]
