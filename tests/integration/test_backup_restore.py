"""``./monitor backup`` and ``./monitor restore``: an online backup of a live
SQLite instance while its workers write results, restored whole; a
PostgreSQL round trip through pg_dump and pg_restore; and the refusals (a
running instance, a file that is no backup) that change nothing."""
from __future__ import annotations

import contextlib
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.peers.ports import reserve_port
from tests.peers.process import ADMIN, MonitorProcess, monitor_env, wait_until

# Real processes (or tools) whatever the database: left out of the PostgreSQL pass.
pytestmark = pytest.mark.process_tree

ENDPOINTS = 20
INTERVAL = 5


def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def result_ids(database: Path) -> set[tuple[int, str]]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
        return set(db.execute("SELECT id, result_id FROM response_times"))


@pytest.fixture(scope="module")
def tcp_target():
    """A loopback TCP listener that accepts every check."""
    listener = socket.create_server(("127.0.0.1", reserve_port()))
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                listener.accept()[0].close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory, tcp_target):
    """A running instance checking ENDPOINTS endpoints every INTERVAL s, so
    results are written all the time."""
    root = tmp_path_factory.mktemp("live")
    monitor = MonitorProcess(monitor_env(root / "data", admin=ADMIN, WEB_CONCURRENCY=1), root / "monitor.log")
    with monitor:
        for number in range(ENDPOINTS):
            created = requests.post(f"{monitor.web}/api/v1/endpoints", auth=ADMIN, timeout=30, json={
                "name": f"tcp {number}", "checkType": "tcp", "target": "127.0.0.1", "port": tcp_target,
                "intervalSeconds": INTERVAL, "timeoutSeconds": 2})
            assert created.status_code == 201, created.text
        database = root / "data" / "monitor.db"
        wait_until(lambda: len(result_ids(database)) >= 2 * ENDPOINTS, 90,
                   lambda: f"no results yet; log:\n{monitor.tail()}")
        yield monitor, database


def test_it_backs_up_a_live_instance_and_restores_every_result(live, tmp_path):
    monitor, database = live
    backups = []
    for round_number in range(3):
        before = result_ids(database)
        destination = tmp_path / f"backup-{round_number}.db"
        done = run_cli(monitor.env, "backup", str(destination))
        after = result_ids(database)
        assert done.returncode == 0, done.stderr
        assert "backup written" in done.stdout
        in_backup = result_ids(destination)
        # A snapshot taken between the two reads: all that was there before,
        # nothing that never was.
        assert before <= in_backup <= after
        backups.append(in_backup)
        time.sleep(2)
    # The instance kept writing across the backups.
    assert len(backups[0]) < len(backups[-1])

    restored_dir = tmp_path / "restored"
    env = monitor_env(restored_dir)
    done = run_cli(env, "restore", str(tmp_path / "backup-2.db"))
    assert done.returncode == 0, done.stderr
    assert result_ids(restored_dir / "monitor.db") == backups[-1]
    with contextlib.closing(sqlite3.connect(restored_dir / "monitor.db")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM endpoints").fetchone() == (ENDPOINTS,)


def test_it_refuses_to_restore_under_a_running_instance(live, tmp_path):
    monitor, database = live
    backup_file = tmp_path / "backup.db"
    assert run_cli(monitor.env, "backup", str(backup_file)).returncode == 0
    holder_pid = str(monitor.process.pid)
    done = run_cli(monitor.env, "restore", str(backup_file))
    assert done.returncode == 2
    assert "an instance is running on the data directory" in done.stderr
    assert f"pid {holder_pid}" in done.stderr and "--force" in done.stderr
    # Nothing was replaced: the live database still holds results newer than the backup.
    wait_until(lambda: result_ids(database) - result_ids(backup_file), 30, "no new results after the backup")
    assert result_ids(backup_file) < result_ids(database)


def test_it_refuses_a_file_that_is_no_backup_and_changes_nothing(tmp_path, migrated_sqlite_template):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(migrated_sqlite_template, data / "monitor.db")
    original = (data / "monitor.db").read_bytes()
    env = monitor_env(data)
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a database\n" * 100)
    foreign = tmp_path / "foreign.db"
    with contextlib.closing(sqlite3.connect(foreign)) as db:
        db.execute("CREATE TABLE t (x)")
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(original[: len(original) // 3])

    for source, message in [(garbage, "is not a backup"), (foreign, "not a monitor's (no table alembic_version)"),
                            (truncated, "truncated.db"), (tmp_path / "missing.db", "cannot read")]:
        done = run_cli(env, "restore", "--force", str(source))
        assert done.returncode == 2, (source, done.stdout)
        assert message in done.stderr, done.stderr
    assert (data / "monitor.db").read_bytes() == original


def test_it_refuses_to_overwrite_a_file(tmp_path, migrated_sqlite_template):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(migrated_sqlite_template, data / "monitor.db")
    existing = tmp_path / "existing.db"
    existing.write_text("keep me")
    done = run_cli(monitor_env(data), "backup", str(existing))
    assert done.returncode == 2 and "exists already" in done.stderr
    assert existing.read_text() == "keep me"


@pytest.mark.skipif(shutil.which("pg_dump") is None or shutil.which("pg_restore") is None,
                    reason="pg_dump and pg_restore (PostgreSQL's client tools) are not installed")
def test_it_round_trips_a_postgresql_database(pg_app, postgres_url, tmp_path):
    from sqlalchemy import create_engine, text

    from app.extensions import db
    from app.services.endpoints import create_endpoint
    from app.services.results import record_results
    from app.checks import CheckResult

    with pg_app.app_context():
        endpoint_id = create_endpoint({"name": "db", "checkType": "tcp", "target": "127.0.0.1", "port": 5432}).id
        record_results([(endpoint_id, CheckResult(is_ok=True, check_type="tcp", response_time_ms=float(n)))
                        for n in range(50)], instance_id="local", location="here")
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    engine = create_engine(postgres_url)

    def ids():
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT id, result_id FROM response_times")).all())

    stored = ids()
    assert len(stored) == 50
    env = monitor_env(tmp_path / "data", DATABASE_URL=postgres_url)
    dump = tmp_path / "monitor.dump"
    done = run_cli(env, "backup", str(dump))
    assert done.returncode == 0, done.stderr
    assert dump.read_bytes().startswith(b"PGDMP")

    # Lose some results and add others; the restore brings back exactly the backup.
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM response_times WHERE id IN (SELECT id FROM response_times LIMIT 20)"))
        conn.execute(text("DELETE FROM endpoints WHERE id <> :id"), {"id": endpoint_id})
    assert len(ids()) == 30
    done = run_cli(env, "restore", str(dump))
    assert done.returncode == 0, done.stderr
    assert ids() == stored

    # A SQLite backup is refused by a PostgreSQL instance, naming both kinds.
    sqlite_file = tmp_path / "sqlite.db"
    with contextlib.closing(sqlite3.connect(sqlite_file)) as conn:
        conn.execute("CREATE TABLE t (x)")
    done = run_cli(env, "restore", str(sqlite_file))
    assert done.returncode == 2 and "is a sqlite backup, but this instance's database" in done.stderr
    engine.dispose()


def test_it_says_when_pg_dump_is_missing(postgres_url, tmp_path):
    env = monitor_env(tmp_path / "data", DATABASE_URL=postgres_url, PATH=str(tmp_path / "empty-bin"))
    done = run_cli(env, "backup", str(tmp_path / "monitor.dump"))
    assert done.returncode == 2
    assert "pg_dump is not installed" in done.stderr
    assert not (tmp_path / "monitor.dump").exists()
