"""Migration 0004 gives SQLite ids that are never reused, keeping every row."""
import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, select, text

from app.checks import CheckResult
from app.extensions import db
from app.models import Endpoint, ResponseTime
from app.services.endpoints import create_endpoint, delete_endpoint
from app.services.results import record_results
from tests.conftest import ROOT, make_app

MIGRATIONS = str(ROOT / "migrations")


@pytest.mark.sqlite_only("0004 rebuilds SQLite's tables (PRAGMA, sqlite_master); on PostgreSQL it changes nothing")
def test_it_keeps_every_result_and_never_reuses_an_id(tmp_path):
    app = make_app(tmp_path, serve="none")
    with app.app_context():
        upgrade(directory=MIGRATIONS, revision="0003")
        # Rows as the schema of 0003 holds them (today's models have more columns).
        now = "2026-11-28 12:00:00"
        for i in range(3):
            db.session.execute(text(
                "INSERT INTO endpoints (name, check_type, target, port, options, interval_seconds, timeout_seconds, "
                "failure_threshold, success_threshold, is_paused, created_at, updated_at, status, "
                "consecutive_failures, consecutive_successes, next_check_at) VALUES "
                "(:name, 'tcp', '127.0.0.1', 9, '{}', 60, 10, 1, 1, 0, :now, :now, 'PENDING', 0, 0, 0)"),
                {"name": f"e{i}", "now": now})
        ids = list(db.session.execute(text("SELECT id FROM endpoints ORDER BY id")).scalars())
        for n, endpoint_id in enumerate(i for i in ids for _ in range(4)):
            db.session.execute(text(
                "INSERT INTO response_times (result_id, endpoint_id, instance_id, location, checked_at, is_ok, "
                "status, check_type, check_metadata) VALUES (:rid, :eid, 'local', 'here', :now, 1, 'UP', 'tcp', '{}')"),
                {"rid": f"00000000-0000-0000-0000-{n:012d}", "eid": endpoint_id, "now": now})
        db.session.commit()
        upgrade(directory=MIGRATIONS)
        assert db.session.execute(select(func.count(ResponseTime.id))).scalar_one() == 12
        assert db.session.execute(text("PRAGMA foreign_key_check")).fetchall() == []
        assert "AUTOINCREMENT" in db.session.execute(
            text("SELECT sql FROM sqlite_master WHERE name = 'endpoints'")).scalar_one()

        newest = db.session.get(Endpoint, ids[-1])
        delete_endpoint(newest)  # its results go with it, by the foreign keys
        assert db.session.execute(select(func.count(ResponseTime.id))).scalar_one() == 8
        again = create_endpoint({"name": "new", "checkType": "tcp", "target": "127.0.0.1", "port": 9})
        assert again.id > ids[-1]

        downgrade(directory=MIGRATIONS, revision="0003")
        assert db.session.execute(select(func.count(ResponseTime.id))).scalar_one() == 8
        db.engine.dispose()
