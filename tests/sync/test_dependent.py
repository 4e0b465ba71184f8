"""The dependent's side against a primary that answers badly: a real HTTP
server on loopback playing a broken or hostile primary."""
import json
import uuid

import pytest
from sqlalchemy import func, select

from app.checks import CheckResult
from app.extensions import db
from app.models import Endpoint, ResponseTime
from app.services import configuration
from app.services.results import record_results
from app.services.sync import dependent
from tests.conftest import SECRET, instance_app


@pytest.fixture
def dependent_app(tmp_path, migrated_sqlite_template, httpserver):
    application = instance_app(tmp_path, migrated_sqlite_template, {
        "PRIMARY_SYNC_URL": httpserver.url_for("/").rstrip("/"), "SYNC_SHARED_SECRET": SECRET,
        "INSTANCE_LOCATION": "lab", "CONNECTION_TIMEOUT": "2"}, serve="none")
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


def test_it_counts_a_garbage_reply_as_a_failure_and_stores_nothing(dependent_app, httpserver):
    httpserver.expect_request("/sync/api/register", method="POST").respond_with_data(
        "<html>502 from a proxy</html>", status=200, content_type="text/html")
    with dependent_app.app_context():
        with pytest.raises(dependent.MalformedReply):
            dependent.sync_once()
        assert configuration.get_state(dependent.TOKEN) is None
        assert configuration.get_state(dependent.FAILURES) == "1"


def test_it_refuses_a_configuration_with_missing_fields(dependent_app, httpserver):
    httpserver.expect_request("/sync/api/register", method="POST").respond_with_json(
        {"instanceId": "x", "token": "t0ken"}, status=201)
    httpserver.expect_request("/sync/api/endpoints").respond_with_json({"endpoints": [{"name": "no id"}]})
    with dependent_app.app_context():
        with pytest.raises(dependent.MalformedReply):
            dependent.sync_once()
        assert db.session.execute(select(func.count(Endpoint.id))).scalar_one() == 0


def test_it_marks_only_results_it_sent_as_acknowledged(dependent_app, httpserver):
    with dependent_app.app_context():
        db.session.add(Endpoint(id=7, name="e", check_type="tcp", target="127.0.0.1", port=1, options={}))
        db.session.commit()
        record_results([(7, CheckResult(is_ok=True, check_type="tcp"))],
                       instance_id=configuration.instance_id(), location="lab")
        sent_id = db.session.execute(select(ResponseTime.result_id)).scalar_one()
        assert dependent.outbox_size() == 1
    foreign = str(uuid.uuid4())
    httpserver.expect_request("/sync/api/heartbeat", method="PUT").respond_with_json(
        {"acknowledged": [sent_id, foreign], "rejected": [], "configVersion": 0, "epoch": 0})
    with dependent_app.app_context():
        client = dependent.client()
        reply = dependent.send_heartbeat(client, "t0ken")
        assert reply["acknowledged"] == 1
        assert dependent.outbox_size() == 0
    sent = json.loads(httpserver.log[-1][0].get_data())
    assert [r["resultId"] for r in sent["results"]] == [sent_id]
    assert sent["results"][0]["checkedAt"].endswith("+00:00")


def test_it_keeps_results_in_the_outbox_while_the_primary_is_down(dependent_app, httpserver):
    with dependent_app.app_context():
        db.session.add(Endpoint(id=3, name="e", check_type="tcp", target="127.0.0.1", port=1, options={}))
        db.session.commit()
        record_results([(3, CheckResult(is_ok=False, check_type="tcp", failure_reason="refused"))],
                       instance_id=configuration.instance_id(), location="lab")
        configuration.set_state(dependent.TOKEN, "t0ken")
        db.session.commit()
    httpserver.expect_request("/sync/api/heartbeat", method="PUT").respond_with_data("down", status=503)
    with dependent_app.app_context():
        with pytest.raises(dependent.PrimaryUnavailable):
            dependent.sync_once()
        assert dependent.outbox_size() == 1
        assert configuration.get_state(dependent.FAILURES) == "1"


def test_its_own_users_do_not_move_the_pulled_config_version(dependent_app):
    from app.services.accounts import create_user

    with dependent_app.app_context():
        configuration.set_config_version(7)
        db.session.commit()
        create_user("viewer@example.org", "correct horse battery")
        assert configuration.config_version() == 7


def test_a_refused_token_is_replaced_by_registering_again(dependent_app, httpserver):
    with dependent_app.app_context():
        configuration.set_state(dependent.TOKEN, "revoked")
        configuration.set_state(dependent.LAST_CONFIG_PULL, dependent.utcnow().isoformat())
        db.session.commit()
    httpserver.expect_oneshot_request("/sync/api/heartbeat", method="PUT").respond_with_data("no", status=401)
    httpserver.expect_request("/sync/api/register", method="POST").respond_with_json(
        {"instanceId": "x", "token": "fresh"}, status=201)
    httpserver.expect_request("/sync/api/heartbeat", method="PUT").respond_with_json(
        {"acknowledged": [], "rejected": [], "configVersion": 0, "epoch": 0})
    with dependent_app.app_context():
        dependent.sync_once()
        assert configuration.get_state(dependent.TOKEN) == "fresh"
    heartbeats = [request.headers["Authorization"] for request, _ in httpserver.log
                  if request.path == "/sync/api/heartbeat"]
    assert heartbeats == ["Bearer revoked", "Bearer fresh"]


@pytest.mark.parametrize("url, warned", [
    ("http://10.1.2.3:3002", True),
    ("http://fra-1.example.org:3002", True),
    ("https://fra-1.example.org:3002", False),
    ("http://127.0.0.1:3002", False),
    ("http://[::1]:3002", False),
    ("http://localhost:3002", False),
    (None, False),
])
def test_it_warns_when_secrets_would_cross_a_network_in_clear_text(url, warned):
    warning = dependent.clear_text_warning(url)
    assert (warning is not None) == warned
    if warned:
        assert url in warning and "https://" in warning


def test_it_reaches_a_primary_behind_tls_with_a_private_ca(tmp_path, migrated_sqlite_template, monkeypatch):
    import ssl

    import trustme
    from pytest_httpserver import HTTPServer

    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(context)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.expect_request("/sync/api/register", method="POST").respond_with_json(
        {"instanceId": "x", "token": "t0ken"}, status=201)
    server.expect_request("/sync/api/endpoints").respond_with_json({"configVersion": 1, "endpoints": []})
    server.expect_request("/sync/api/heartbeat", method="PUT").respond_with_json(
        {"acknowledged": [], "rejected": [], "configVersion": 1, "epoch": 0})
    server.start()
    application = instance_app(tmp_path, migrated_sqlite_template, {
        "PRIMARY_SYNC_URL": f"https://localhost:{server.port}", "SYNC_SHARED_SECRET": SECRET,
        "INSTANCE_LOCATION": "lab", "CONNECTION_TIMEOUT": "2"}, serve="none")
    try:
        with application.app_context():
            with pytest.raises(dependent.PrimaryUnavailable):  # a CA nobody told it to trust
                dependent.sync_once()
            assert configuration.get_state(dependent.TOKEN) is None
            bundle = tmp_path / "private-ca.pem"
            ca.cert_pem.write_to_path(str(bundle))
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
            dependent.sync_once()
            assert configuration.get_state(dependent.TOKEN) == "t0ken"
    finally:
        server.stop()
        with application.app_context():
            db.session.remove()
            db.engine.dispose()


def test_the_sync_lock_is_short_lived_and_renewed_by_every_request(dependent_app, httpserver, redis_url,
                                                                   monkeypatch):
    """A worker killed mid-round must not hold syncing off for long: the
    lock lives a little longer than one request and each request renews it."""
    import time

    import redis
    from werkzeug import Response

    from workers import jobs
    from workers.jobs.sync import LOCK_KEY, sync_with_primary

    monkeypatch.setattr(jobs, "_app", dependent_app)
    server = redis.Redis.from_url(redis_url)
    seen = []

    def answer(body, status=200):
        def handler(request):
            seen.append(server.pttl(LOCK_KEY))
            time.sleep(1.2)  # without renewal, each request would find 1.2 s less left
            return Response(json.dumps(body), status=status, content_type="application/json")
        return handler

    httpserver.expect_request("/sync/api/register", method="POST").respond_with_handler(
        answer({"instanceId": "x", "token": "t0ken"}, 201))
    httpserver.expect_request("/sync/api/endpoints").respond_with_handler(answer({"configVersion": 0, "endpoints": []}))
    httpserver.expect_request("/sync/api/heartbeat", method="PUT").respond_with_handler(
        answer({"acknowledged": [], "rejected": [], "configVersion": 0, "epoch": 0}))

    server.set(LOCK_KEY, "a worker that was killed", px=1500)
    assert sync_with_primary() == {"skipped": "another sync is running"}
    time.sleep(1.6)
    assert "failed" not in sync_with_primary()
    ttl_ms = (2 * 2 + 15) * 1000  # CONNECTION_TIMEOUT is 2 in this fixture
    assert len(seen) == 3 and all(ttl_ms - 900 < left <= ttl_ms for left in seen), seen
    assert not server.exists(LOCK_KEY)


def test_after_a_refused_token_it_registers_first_and_says_so(dependent_app, httpserver):
    """The secret was changed to keep this instance out: no heartbeat full of
    results goes to the primary only to be refused, round after round."""
    with dependent_app.app_context():
        configuration.set_state(dependent.TOKEN, "removed")
        configuration.set_state(dependent.LAST_CONFIG_PULL, dependent.utcnow().isoformat())
        db.session.commit()
    httpserver.expect_request("/sync/api/heartbeat", method="PUT").respond_with_data("no", status=401)
    httpserver.expect_request("/sync/api/register", method="POST").respond_with_data("wrong secret", status=401)
    with dependent_app.app_context():
        for _ in range(2):
            with pytest.raises(dependent.NotAuthorized):
                dependent.sync_once()
        link = dependent.link_status()
        assert link["token_refused_at"] is not None and not link["registered"] and link["failures"] == 2
        assert configuration.get_state(dependent.TOKEN) == "removed"
    paths = [request.path for request, _ in httpserver.log]
    assert paths == ["/sync/api/heartbeat", "/sync/api/register", "/sync/api/register"]


def test_a_lost_sync_lock_abandons_the_round_without_counting_a_failure(dependent_app, httpserver):
    from redis.exceptions import LockError, LockNotOwnedError

    def lock_lost():
        raise LockNotOwnedError("the sync lock expired")

    with dependent_app.app_context():
        with pytest.raises(LockError):
            dependent.sync_once(before_request=lock_lost)
        assert configuration.get_state(dependent.FAILURES) is None
    assert httpserver.log == []


def test_a_refusal_later_in_the_round_also_makes_the_next_round_register_first(dependent_app, httpserver):
    with dependent_app.app_context():
        configuration.set_state(dependent.TOKEN, "t0ken")
        db.session.commit()
    httpserver.expect_request("/sync/api/heartbeat", method="PUT").respond_with_json(
        {"acknowledged": [], "rejected": [], "configVersion": 5, "epoch": 0})
    httpserver.expect_request("/sync/api/endpoints").respond_with_data("no", status=401)
    with dependent_app.app_context():
        with pytest.raises(dependent.NotAuthorized):
            dependent.sync_once()
        assert configuration.get_state(dependent.TOKEN_REFUSED_AT) is not None
