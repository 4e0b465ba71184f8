"""Writers that meet: two result batches for one endpoint, and a heartbeat
whose instance is removed while it is being handled."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from app.checks import CheckResult
from app.extensions import db
from app.models import Endpoint, ResponseTime, utcnow
from app.services.endpoints import create_endpoint
from app.services import consensus
from app.services.results import result_row, store_results
from tests.conftest import make_app


def _batch_in_thread(application, endpoint_id, ok, checked_at, stored, outcomes):
    """Store a result, wait until the other batch has stored one too, then
    count it: the order in which two check batches can meet."""
    result = CheckResult(is_ok=ok, check_type="tcp", failure_reason=None if ok else "refused",
                         checked_at=checked_at)
    with application.app_context():
        try:
            row = result_row(endpoint_id, result, instance_id="i", location="l")
            store_results([row])
            stored.wait(30)
            consensus.ingest([row], instance_id="i", location="l", own=True)
            db.session.commit()
            outcomes.append("ok")
        except Exception as exc:  # the assertion below names it
            db.session.rollback()
            outcomes.append(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_batches_for_one_endpoint_both_count(backend, request, tmp_path):
    if backend == "sqlite":
        first = request.getfixturevalue("app")
        second = make_app(tmp_path)  # the same database file
    else:
        first = request.getfixturevalue("pg_app")
        second = make_app(tmp_path / "second", {"DATABASE_URL": request.getfixturevalue("postgres_url")})
    with first.app_context():
        endpoint_id = create_endpoint({"name": "db", "checkType": "tcp", "target": "127.0.0.1", "port": 5432}).id
    stored, outcomes = threading.Barrier(2, timeout=30), []
    if backend == "sqlite":
        # One writer at a time: the second batch waits for the first to commit.
        stored = threading.Barrier(1)
    # On PostgreSQL, batches of one location for one endpoint and day take
    # turns from their insert (the day's count row); across midnight they
    # can both have stored before either votes.
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    times = (midnight - timedelta(seconds=1), midnight + timedelta(seconds=1))
    threads = [threading.Thread(target=_batch_in_thread,
                                args=(application, endpoint_id, ok, at, stored, outcomes))
               for application, ok, at in ((first, True, times[0]), (second, False, times[1]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == ["ok", "ok"], outcomes
    with first.app_context():
        assert db.session.query(ResponseTime).filter_by(endpoint_id=endpoint_id).count() == 2
        endpoint = db.session.get(Endpoint, endpoint_id)
        # One location: the result checked later counts; the other, if
        # applied after it, is older and moves nothing.
        assert endpoint.consecutive_failures + endpoint.consecutive_successes == 1
    with second.app_context():
        db.engine.dispose()


def test_a_heartbeat_for_a_removed_instance_is_refused_not_a_crash(primary_app):
    from app.services.sync import primary, tokens
    from app.services.sync.schemas import HeartbeatPayload, InstanceRegistration
    from tests.sync.test_sync_api import DEPENDENT_ID, heartbeat, registration

    with primary_app.app_context():
        token = primary.register(InstanceRegistration.model_validate(registration()))["token"]
        verified = tokens.verify(token)
        assert verified is not None
        primary.delete_instance(DEPENDENT_ID)  # between the token check and the heartbeat
        with pytest.raises(primary.InstanceRemoved):
            primary.heartbeat(DEPENDENT_ID, HeartbeatPayload.model_validate(heartbeat()), verified)
