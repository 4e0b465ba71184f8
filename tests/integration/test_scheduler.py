"""The clock claims due endpoints and enqueues batches; an RQ worker runs them
against real peers and stores the results (real Redis: embedded and server)."""
import socket
import time

import pytest

from rq import Queue, SimpleWorker
from sqlalchemy import select

from app.extensions import db
from app.models import Endpoint, ResponseTime
from app.services.endpoints import create_endpoint, set_paused
from app.services.scheduling import claim_due, phase


def _add(app, **fields):
    with app.app_context():
        return create_endpoint({"intervalSeconds": 60, "timeoutSeconds": 2, **fields}).id


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends


def test_it_claims_each_due_endpoint_once(app):
    ids = [_add(app, name=f"tcp{i}", checkType="tcp", target="127.0.0.1", port=9) for i in range(3)]
    paused = _add(app, name="paused", checkType="tcp", target="127.0.0.1", port=9)
    with app.app_context():
        set_paused(db.session.get(Endpoint, paused), True)
        now = 1_000_000.0
        claimed = claim_due(now, 100)
        assert sorted(c.endpoint_id for c in claimed) == ids
        assert all(c.due_at == now for c in claimed)
        assert claim_due(now + 1, 100) == []
        # After the first check each endpoint keeps its own phase in the interval.
        for endpoint_id in ids:
            due = db.session.get(Endpoint, endpoint_id).next_check_at
            assert due == now + 60 * phase(endpoint_id)


def test_it_skips_missed_periods_instead_of_replaying_them(app):
    endpoint_id = _add(app, name="tcp", checkType="tcp", target="127.0.0.1", port=9)
    with app.app_context():
        claim_due(1000.0, 10)
        first_due = db.session.get(Endpoint, endpoint_id).next_check_at
        # The clock was away for ten intervals: one check now, then on schedule.
        claimed = claim_due(first_due + 600, 10)
        assert [c.due_at for c in claimed] == [first_due]
        assert db.session.get(Endpoint, endpoint_id).next_check_at == first_due + 600 + 60
        assert claim_due(first_due + 601, 10) == []


def test_endpoints_that_missed_their_periods_keep_their_phases(app):
    ids = [_add(app, name=f"tcp{i}", checkType="tcp", target="127.0.0.1", port=9) for i in range(5)]
    with app.app_context():
        claim_due(1000.0, 10)
        phases = {i: db.session.get(Endpoint, i).next_check_at % 60 for i in ids}
        assert len(set(phases.values())) == 5
        # The clock was away for ten and a half intervals: each endpoint is
        # checked once now, then again at its own place in the interval.
        now = 1000.0 + 630
        assert len(claim_due(now, 10)) == 5
        for endpoint_id in ids:
            next_at = db.session.get(Endpoint, endpoint_id).next_check_at
            assert now < next_at <= now + 60
            assert next_at % 60 == pytest.approx(phases[endpoint_id])


def test_it_checks_due_endpoints_through_redis_and_a_worker(app, redis_url, httpserver, monkeypatch):
    from workers import jobs
    from workers.clock import Clock

    monkeypatch.setattr(jobs, "_app", app)
    httpserver.expect_request("/ok").respond_with_data("fine")
    up = _add(app, name="web", checkType="http", target=httpserver.url_for("/ok"))
    down = _add(app, name="closed", checkType="tcp", target="127.0.0.1", port=closed_port())

    clock = Clock(app)
    assert clock.tick(time.time()) == 2
    queue = Queue("checks", connection=clock.redis)
    assert queue.count >= 1
    SimpleWorker([queue], connection=clock.redis).work(burst=True)

    with app.app_context():
        rows = {r.endpoint_id: r for r in db.session.execute(select(ResponseTime)).scalars()}
        assert set(rows) == {up, down}
        assert rows[up].status == "UP" and rows[up].check_metadata["httpStatus"] == 200
        assert rows[down].status == "DOWN" and "refused" in rows[down].failure_reason.lower()
        assert rows[up].check_metadata["scheduleLagMs"] >= 0
        assert db.session.get(Endpoint, up).status == "UP"
        assert db.session.get(Endpoint, down).status == "DOWN"
    # Nothing is due until the next period, so the next tick enqueues nothing.
    assert clock.tick(time.time()) == 0


def test_it_lets_only_one_clock_lead(app, redis_url):
    from workers.clock import Clock

    first, second = Clock(app), Clock(app)
    assert first.hold_lease() is True
    assert second.hold_lease() is False
    assert second.tick(time.time()) == 0
    assert first.hold_lease() is True  # renewing keeps it


def test_it_claims_only_the_rows_another_clock_did_not_take(app, monkeypatch):
    ids = [_add(app, name=f"tcp{i}", checkType="tcp", target="127.0.0.1", port=9) for i in range(3)]
    with app.app_context():
        claim_due(1000.0, 10)  # first checks done; each row now holds its next due time
        due = {i: db.session.get(Endpoint, i).next_check_at for i in ids}
        later = max(due.values()) + 1
        session = db.session()
        real_execute = session.execute
        raced = []

        def racing_execute(statement, params=None, **kw):
            # Just before our claim, a rival clock that read the same rows
            # claims ids[1], writing the very value we are about to write.
            if not raced and params and isinstance(params, list) and str(statement).startswith("UPDATE endpoints"):
                raced.append(True)
                with db.engine.begin() as rival:  # the other clock's own connection and commit
                    rival.execute(db.text("UPDATE endpoints SET next_check_at = :v WHERE id = :id"),
                                  {"v": due[ids[1]] + 60, "id": ids[1]})
            return real_execute(statement, params, **kw)

        monkeypatch.setattr(session, "execute", racing_execute)
        claimed = claim_due(later, 10)
        monkeypatch.undo()
        assert raced
        assert sorted(c.endpoint_id for c in claimed) == [ids[0], ids[2]]
        assert db.session.get(Endpoint, ids[1]).next_check_at == due[ids[1]] + 60


@pytest.fixture
def threaded_httpserver():
    """An HTTP server that answers requests concurrently (one may hang)."""
    from pytest_httpserver import HTTPServer

    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def test_a_slow_endpoint_does_not_hold_back_its_batch(app, threaded_httpserver, monkeypatch):
    import threading

    from werkzeug import Response

    httpserver = threaded_httpserver
    from workers import jobs
    from workers.jobs.checks import run_checks

    monkeypatch.setattr(jobs, "_app", app)
    release = threading.Event()

    def slow(request):
        release.wait(timeout=10)
        return Response("late")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    httpserver.expect_request("/fast").respond_with_data("ok")
    fast = _add(app, name="fast", checkType="http", target=httpserver.url_for("/fast"), timeoutSeconds=8)
    slow_id = _add(app, name="slow", checkType="http", target=httpserver.url_for("/slow"), timeoutSeconds=8)
    try:
        summary = run_checks([fast, slow_id], [time.time(), time.time()])
        # The job ended while the slow check was still waiting for its
        # answer (released only below), with the fast result stored and the
        # slow check handed over.
        assert summary["checked"] == 1 and summary["handedOff"] == 1
        with app.app_context():
            assert set(db.session.execute(select(ResponseTime.endpoint_id)).scalars()) == {fast}
    finally:
        release.set()

    def stored():
        with app.app_context():
            return set(db.session.execute(select(ResponseTime.endpoint_id)).scalars())

    deadline = time.time() + 10
    while time.time() < deadline and stored() != {fast, slow_id}:
        time.sleep(0.1)
    assert stored() == {fast, slow_id}  # the late result is stored when it ends


def test_it_starts_each_check_at_its_due_time(app, httpserver, monkeypatch):
    from workers import jobs
    from workers.jobs.checks import run_checks

    monkeypatch.setattr(jobs, "_app", app)
    httpserver.expect_request("/ok").respond_with_data("ok")
    endpoint_id = _add(app, name="later", checkType="http", target=httpserver.url_for("/ok"))
    due = time.time() + 0.6
    run_checks([endpoint_id], [due])
    with app.app_context():
        row = db.session.execute(select(ResponseTime)).scalar_one()
        # Not before its due time, though the job got it 0.6 s early.
        assert row.checked_at.timestamp() >= due - 0.01


def test_a_scheduled_http_check_names_this_instance_s_location(app, httpserver, monkeypatch):
    from workers import jobs
    from workers.jobs.checks import run_checks

    monkeypatch.setattr(jobs, "_app", app)
    httpserver.expect_request("/ok").respond_with_data("ok")
    endpoint_id = _add(app, name="named", checkType="http", target=httpserver.url_for("/ok"))
    run_checks([endpoint_id], [time.time()])
    location = app.config["SETTINGS"].instance_location
    [(request, _)] = httpserver.log
    assert request.headers["User-Agent"].endswith(f" (location {location})")
