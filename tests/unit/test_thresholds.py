"""Status changes only after consecutive failures / successes."""
from datetime import timedelta

from sqlalchemy import select

from app.checks import CheckResult
from app.extensions import db
from app.models import Endpoint, ResponseTime, StatusChange, utcnow
from app.services.results import next_status, record_results


def test_it_goes_up_on_the_first_success_of_a_new_endpoint():
    assert next_status("PENDING", 0, 1, failure_threshold=3, success_threshold=2) == "UP"


def test_it_waits_for_the_failure_threshold():
    assert next_status("UP", 2, 0, failure_threshold=3, success_threshold=1) == "UP"
    assert next_status("UP", 3, 0, failure_threshold=3, success_threshold=1) == "DOWN"


def test_it_waits_for_the_success_threshold_to_recover():
    assert next_status("DOWN", 0, 1, failure_threshold=1, success_threshold=2) == "DOWN"
    assert next_status("DOWN", 0, 2, failure_threshold=1, success_threshold=2) == "UP"


def _endpoint(app, **kw):
    with app.app_context():
        endpoint = Endpoint(name="e", check_type="tcp", target="127.0.0.1", port=1, options={},
                            failure_threshold=kw.get("failure_threshold", 2),
                            success_threshold=kw.get("success_threshold", 2))
        db.session.add(endpoint)
        db.session.commit()
        return endpoint.id


def _feed(app, endpoint_id, outcomes):
    # Each feed is newer than the one before, as a location's results are.
    start = utcnow() - timedelta(milliseconds=len(outcomes))
    results = [
        (endpoint_id, CheckResult(is_ok=ok, check_type="tcp", failure_reason=None if ok else "refused",
                                  checked_at=start + timedelta(milliseconds=i)))
        for i, ok in enumerate(outcomes)
    ]
    with app.app_context():
        return record_results(results, instance_id="i", location="l")


def test_it_records_each_status_change_once(app):
    endpoint_id = _endpoint(app)
    _feed(app, endpoint_id, [True])          # PENDING -> UP
    _feed(app, endpoint_id, [False])         # 1 failure: still UP
    transitions = _feed(app, endpoint_id, [False, False])  # 3 in a row: DOWN
    assert [(t.from_status, t.to_status) for t in transitions] == [("UP", "DOWN")]
    assert transitions[0].reason == "refused"
    _feed(app, endpoint_id, [True])          # 1 success: still DOWN
    transitions = _feed(app, endpoint_id, [True])
    assert [(t.from_status, t.to_status) for t in transitions] == [("DOWN", "UP")]
    with app.app_context():
        endpoint = db.session.get(Endpoint, endpoint_id)
        assert (endpoint.status, endpoint.consecutive_successes, endpoint.consecutive_failures) == ("UP", 2, 0)
        changes = db.session.execute(select(StatusChange.to_status).order_by(StatusChange.id)).scalars().all()
        assert changes == ["UP", "DOWN", "UP"]
        assert db.session.query(ResponseTime).count() == 6


def test_it_stores_a_replayed_result_once(app):
    endpoint_id = _endpoint(app)
    result = CheckResult(is_ok=True, check_type="tcp")
    with app.app_context():
        record_results([(endpoint_id, result)], instance_id="i", location="l")
        record_results([(endpoint_id, result)], instance_id="i", location="l")
        assert db.session.query(ResponseTime).count() == 1


def test_it_drops_results_of_a_deleted_endpoint(app):
    with app.app_context():
        transitions = record_results([(999, CheckResult(is_ok=True, check_type="tcp"))],
                                     instance_id="i", location="l")
        assert transitions == []
        assert db.session.query(ResponseTime).count() == 0


def test_a_paused_endpoints_manual_checks_change_no_status(app):
    endpoint_id = _endpoint(app, failure_threshold=1)
    _feed(app, endpoint_id, [True])
    with app.app_context():
        db.session.get(Endpoint, endpoint_id).is_paused = True
        db.session.commit()
    assert _feed(app, endpoint_id, [False, False]) == []
    with app.app_context():
        assert db.session.get(Endpoint, endpoint_id).status == "UP"
        assert db.session.query(ResponseTime).count() == 3


def test_a_shorter_interval_counts_from_now(app):
    import time

    from app.services.endpoints import update_endpoint

    endpoint_id = _endpoint(app)
    with app.app_context():
        endpoint = db.session.get(Endpoint, endpoint_id)
        endpoint.interval_seconds, endpoint.next_check_at = 86400, time.time() + 80000
        db.session.commit()
        update_endpoint(endpoint, {"intervalSeconds": 30}, partial=True)
        assert endpoint.next_check_at <= time.time() + 30


def test_a_straggler_stored_late_does_not_move_last_checked_back(app):
    endpoint_id = _endpoint(app)
    now = utcnow()
    newer = CheckResult(is_ok=True, check_type="tcp", response_time_ms=3.0, checked_at=now)
    straggler = CheckResult(is_ok=False, check_type="tcp", failure_reason="timed out",
                            checked_at=now - timedelta(seconds=20))
    with app.app_context():
        record_results([(endpoint_id, newer)], instance_id="i", location="l")
        record_results([(endpoint_id, straggler)], instance_id="i", location="l")
        endpoint = db.session.get(Endpoint, endpoint_id)
        assert endpoint.last_checked_at == now
        assert endpoint.last_response_time_ms == 3.0 and endpoint.last_failure_reason is None
        assert len(db.session.execute(select(ResponseTime.id).where(ResponseTime.endpoint_id == endpoint_id)).all()) == 2
