"""A dependent against a real primary (its sync API served on loopback)."""
import threading

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from app.checks import CheckResult
from app.extensions import db
from app.models import ResponseTime
from app.services import configuration
from app.services.endpoints import create_endpoint
from app.services.results import record_results
from app.services.sync import dependent
from tests.conftest import SECRET, instance_app


@pytest.fixture
def primary_url(primary_app):
    server = make_server("127.0.0.1", 0, primary_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def dependent_app(tmp_path, migrated_sqlite_template, primary_url):
    application = instance_app(tmp_path / "dependent", migrated_sqlite_template, {
        "PRIMARY_SYNC_URL": primary_url, "SYNC_SHARED_SECRET": SECRET, "INSTANCE_LOCATION": "lab"},
        serve="none")
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


def test_a_result_the_primary_refuses_does_not_block_the_outbox(primary_app, dependent_app):
    with primary_app.app_context():
        endpoint_id = create_endpoint({"name": "web", "checkType": "tcp", "target": "127.0.0.1", "port": 9}).id
    with dependent_app.app_context():
        dependent.sync_once()  # registers and pulls the configuration
        own = configuration.instance_id()
        record_results([
            (endpoint_id, CheckResult(is_ok=False, check_type="tcp", failure_reason="x" * 5000)),
            (endpoint_id, CheckResult(is_ok=True, check_type="tcp",
                                      metadata={f"k{i}": i for i in range(80)})),  # too many keys
            (endpoint_id, CheckResult(is_ok=True, check_type="tcp")),
        ], instance_id=own, location="lab")
        with pytest.raises(dependent.Refused):
            dependent.sync_once()
        dependent.sync_once()
        assert dependent.outbox_size() == 0
    with primary_app.app_context():
        stored = db.session.execute(select(ResponseTime.failure_reason, ResponseTime.is_ok)).all()
    # The long reason arrived (cut to the API's limit); the refused one stayed home.
    assert sorted((len(r or ""), ok) for r, ok in stored) == [(0, True), (2000, False)]
