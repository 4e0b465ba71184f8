"""Alembic migrations build the whole schema on SQLite and PostgreSQL."""
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from app.extensions import db
from app.services import configuration
from tests.conftest import ROOT, make_app

TABLES = {
    "endpoints", "notification_services", "endpoint_notifications", "response_times", "users",
    "api_keys", "settings", "monitoring_instances", "instance_config", "instance_tokens",
    "location_status", "probe_states", "aggregated_results", "status_changes",
}


def test_it_upgrades_an_empty_sqlite_file(tmp_path):
    app = make_app(tmp_path, serve="none")
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        created = set(inspect(db.engine).get_table_names())
        assert TABLES <= created
        assert set(db.metadata.tables) <= created, "a model's table has no migration"
        state = configuration.ensure_initialized()
        assert state["role"] == "standalone" and len(state["instance_id"]) == 36
        # A second start keeps the identity made the first time.
        assert configuration.ensure_initialized()["instance_id"] == state["instance_id"]
        db.engine.dispose()


def test_it_keeps_the_first_role_when_the_environment_changes(tmp_path):
    app = make_app(tmp_path, serve="none")
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        first = configuration.ensure_initialized()
        db.engine.dispose()
    later = make_app(tmp_path, {"ENABLE_SYNC_API": "true", "SYNC_SHARED_SECRET": "s" * 16}, serve="none")
    with later.app_context():
        assert configuration.role() == "standalone"
        assert configuration.instance_id() == first["instance_id"]
        db.engine.dispose()


def test_it_upgrades_and_downgrades_postgresql(pg_app):
    with pg_app.app_context():
        tables = set(inspect(db.engine).get_table_names())
        assert TABLES <= tables
        downgrade(directory=str(ROOT / "migrations"), revision="base")
        assert not TABLES & set(inspect(db.engine).get_table_names())
        upgrade(directory=str(ROOT / "migrations"))
        assert TABLES <= set(inspect(db.engine).get_table_names())


def test_it_stores_results_on_postgresql(pg_app):
    from app.checks import CheckResult
    from app.models import ResponseTime
    from app.services.endpoints import create_endpoint
    from app.services.results import record_results

    with pg_app.app_context():
        endpoint = create_endpoint({"name": "db", "checkType": "tcp", "target": "127.0.0.1", "port": 5432})
        result = CheckResult(is_ok=False, check_type="tcp", failure_reason="refused")
        record_results([(endpoint.id, result)], instance_id="i", location="l")
        record_results([(endpoint.id, result)], instance_id="i", location="l")  # replay
        assert db.session.query(ResponseTime).count() == 1
        assert db.session.get(type(endpoint), endpoint.id).status == "DOWN"
        assert configuration.config_version() >= 1
