"""Migration 0004 gives SQLite ids that are never reused, keeping every row."""
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, select, text

from app.checks import CheckResult
from app.extensions import db
from app.models import Endpoint, ResponseTime
from app.services.endpoints import create_endpoint, delete_endpoint
from app.services.results import record_results
from tests.conftest import ROOT, make_app

MIGRATIONS = str(ROOT / "migrations")


def test_it_keeps_every_result_and_never_reuses_an_id(tmp_path):
    app = make_app(tmp_path, serve="none")
    with app.app_context():
        upgrade(directory=MIGRATIONS, revision="0003")
        ids = [create_endpoint({"name": f"e{i}", "checkType": "tcp", "target": "127.0.0.1", "port": 9}).id
               for i in range(3)]
        record_results([(i, CheckResult(is_ok=True, check_type="tcp")) for i in ids for _ in range(4)],
                       instance_id="local", location="here")
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
