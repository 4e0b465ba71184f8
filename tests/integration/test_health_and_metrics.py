"""/healthz, /readyz and /metrics on the real app: SQLite (and PostgreSQL
where TEST_DATABASE_URL is set), real Redis (embedded and server), an RQ
worker registered in it and the clock's lease set as a clock would."""
from __future__ import annotations

import socket
import time
from dataclasses import replace
from datetime import timedelta

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue, Worker
from sqlalchemy import event, update

from app import create_app
from app.checks import CheckResult
from app.config import ConfigError, load_settings
from app.extensions import db
from app.models import InstanceConfig, MonitoringInstance, NotificationDelivery, NotificationService, ProbeState, utcnow
from app.services import configuration, readiness
from app.services.accounts import create_api_key
from app.services.endpoints import create_endpoint
from app.services.results import record_results, result_row, store_results
from workers.clock import LEASE_KEY

ENDPOINT = {"name": "Shop", "checkType": "tcp", "target": "127.0.0.1", "port": 9, "intervalSeconds": 30,
            "timeoutSeconds": 5}


@pytest.fixture(params=["sqlite", "postgresql"])
def any_app(request):
    """The web app on SQLite, and on PostgreSQL where TEST_DATABASE_URL is set."""
    return request.getfixturevalue("app" if request.param == "sqlite" else "pg_app")


def sibling(app, *, serve: str = "web", **settings):
    """Another app on the same database: the sync surface, or other settings."""
    return create_app({"TESTING": True}, serve=serve, settings=replace(app.config["SETTINGS"], **settings))


def hold_lease(url: str) -> None:
    """What a leading clock does every tick."""
    redis.Redis.from_url(url).set(LEASE_KEY, "test-clock", px=5000)


def register_worker(url: str, queues=("checks", "sync", "notify")) -> Worker:
    """An RQ worker registered as alive (as a running one is), not started."""
    connection = redis.Redis.from_url(url)
    worker = Worker([Queue(name, connection=connection) for name in queues], connection=connection)
    worker.register_birth()
    return worker


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def count_statements(app, call) -> tuple[int, object]:
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        answer = call()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(statements), answer


# --- /healthz ----------------------------------------------------------------------


def test_healthz_answers_ok_on_both_ports_without_touching_the_database(app):
    sync_app = sibling(app, serve="sync")
    for application, path in ((app, "/healthz"), (sync_app, "/sync/api/healthz")):
        statements, response = count_statements(application, lambda: application.test_client().get(path))
        assert (response.status_code, response.get_json()) == (200, {"status": "ok"}), path
        assert statements == 0, path


def test_healthz_answers_while_the_database_is_unreachable(tmp_path):
    from tests.conftest import make_app

    dead = make_app(tmp_path, {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed_port()}/none"})
    assert dead.test_client().get("/healthz").status_code == 200
    ready = dead.test_client().get("/readyz")
    assert ready.status_code == 503
    body = ready.get_json()
    assert "database" in body["failing"] and body["checks"]["database"]["ok"] is False
    assert "database: OperationalError" in body["message"]


def test_the_old_health_routes_still_answer(app):
    assert app.test_client().get("/health").get_json()["status"] == "ok"
    assert sibling(app, serve="sync").test_client().get("/sync/api/health").get_json()["status"] == "ok"


# --- /readyz -----------------------------------------------------------------------


def test_readyz_is_ready_with_a_clock_lease_and_a_live_worker(any_app, redis_url):
    hold_lease(redis_url)
    register_worker(redis_url)
    for application, path in ((any_app, "/readyz"), (sibling(any_app, serve="sync"), "/sync/api/readyz")):
        response = application.test_client().get(path)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["status"] == "ready" and "failing" not in body
        assert {name: check["ok"] for name, check in body["checks"].items()} == {
            "database": True, "redis": True, "clock": True, "workers": True}
        assert body["checks"]["workers"]["detail"] == "1 alive"
        assert response.headers["Cache-Control"] == "no-store"


def test_readyz_names_workers_when_none_is_alive(app, redis_url):
    hold_lease(redis_url)
    register_worker(redis_url, queues=("someone-elses-queue",))  # not one of ours
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not_ready" and body["failing"] == ["workers"]
    assert "no RQ worker alive on the checks, sync, notify queues" in body["message"]


def test_readyz_names_workers_once_the_worker_has_stopped(app, redis_url):
    hold_lease(redis_url)
    worker = register_worker(redis_url)
    assert app.test_client().get("/readyz").status_code == 200
    worker.register_death()
    assert app.test_client().get("/readyz").get_json()["failing"] == ["workers"]


def test_readyz_names_the_clock_when_no_clock_holds_the_lease(app, redis_url):
    register_worker(redis_url)
    for application, path in ((app, "/readyz"), (sibling(app, serve="sync"), "/sync/api/readyz")):
        response = application.test_client().get(path)
        assert response.status_code == 503, path
        body = response.get_json()
        assert body["failing"] == ["clock"]
        assert f"no clock holds the lease ({LEASE_KEY})" in body["checks"]["clock"]["detail"]


def test_readyz_names_redis_when_nothing_listens_at_redis_url(app, monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{closed_port()}/0")
    for application, path in ((app, "/readyz"), (sibling(app, serve="sync"), "/sync/api/readyz")):
        response = application.test_client().get(path)
        assert response.status_code == 503, path
        body = response.get_json()
        assert body["failing"] == ["redis", "clock", "workers"]
        assert body["checks"]["database"]["ok"] is True
        assert body["checks"]["redis"]["detail"].startswith("ConnectionError")
        assert body["checks"]["clock"]["detail"] == "not checked: Redis is unreachable"
        assert body["message"].startswith("not ready: redis: ConnectionError")


def test_readyz_gives_up_on_a_redis_that_accepts_but_never_answers(app, monkeypatch):
    """A hung Redis (the connection is accepted, nothing is ever sent back)
    is reported within the probe client's 1 s timeout, not waited for."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes connections; nobody reads
        monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        started = time.monotonic()
        response = app.test_client().get("/readyz")
        waited = time.monotonic() - started
    assert response.status_code == 503
    assert response.get_json()["checks"]["redis"]["detail"].startswith("TimeoutError")
    assert waited < 5, f"the probe waited {waited:.1f} s on a silent Redis"


def test_readyz_names_redis_when_redis_url_is_unset(app, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    body = app.test_client().get("/readyz").get_json()
    assert body["checks"]["redis"]["detail"] == "REDIS_URL is not set"


def test_readiness_strips_credentials_from_reasons():
    reason = readiness._reason(ValueError("cannot reach redis://user:hunter2@10.0.0.1:6379/0\nmore"))
    assert reason == "ValueError: cannot reach redis://10.0.0.1:6379/0"


# --- /metrics: access --------------------------------------------------------------


def test_metrics_refuse_a_request_without_credentials(app, user):
    response = app.test_client().get("/metrics")
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert app.test_client().get("/metrics", headers={"Authorization": "Bearer epm_nonsense"}).status_code == 401
    assert app.test_client().get("/metrics", headers={"Authorization": "Bearer something-else"}).status_code == 401


def test_metrics_are_served_with_an_api_key_a_session_or_the_metrics_token(app, user, monkeypatch):
    from tests.ui.conftest import sign_in

    monkeypatch.delenv("REDIS_URL", raising=False)
    with app.app_context():
        _, key = create_api_key(user, "prometheus")
    response = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    browser = app.test_client()
    sign_in(browser, "admin@example.org", "correct horse battery")
    assert browser.get("/metrics").status_code == 200

    token = "scrape-token-0123456789"
    tokened = sibling(app, metrics_token=token)
    assert tokened.test_client().get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert tokened.test_client().get("/metrics", headers={"Authorization": f"Bearer {token}x"}).status_code == 401
    assert tokened.test_client().get("/metrics").status_code == 401


def test_metrics_are_open_with_metrics_public(app, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert sibling(app, metrics_public=True).test_client().get("/metrics").status_code == 200


@pytest.mark.parametrize(("env", "message"), [
    ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN must be at least 16 characters"),
    ({"METRICS_PUBLIC": "maybe"}, "METRICS_PUBLIC must be true or false, got 'maybe'"),
    ({"METRICS_PUBLIC": "true", "METRICS_TOKEN": "scrape-token-0123456789"},
     "METRICS_PUBLIC=true and METRICS_TOKEN are both set"),
])
def test_metrics_settings_are_validated_naming_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_metrics_settings_default_to_protected():
    settings = load_settings({"METRICS_TOKEN": " scrape-token-0123456789 "})
    assert (settings.metrics_public, settings.metrics_token) == (False, "scrape-token-0123456789")
    assert (load_settings({}).metrics_public, load_settings({}).metrics_token) == (False, None)


# --- /metrics: values --------------------------------------------------------------


def scrape(app) -> dict:
    """{(name, frozenset(labels)): value} of one open scrape."""
    response = sibling(app, metrics_public=True).test_client().get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels):
    """The value of the one sample of ``name`` whose labels include ``labels``."""
    wanted = {(key, str(item)) for key, item in labels.items()}
    found = [v for (sample, sample_labels), v in samples.items() if sample == name and wanted <= sample_labels]
    assert len(found) == 1, f"{name} {labels}: {len(found)} samples"
    return found[0]


def result(ok: bool, ms: float | None, *, lag_ms: float | None = None, at=None) -> CheckResult:
    made = CheckResult(is_ok=ok, check_type="tcp", response_time_ms=ms,
                       failure_reason=None if ok else "connection refused",
                       metadata={} if lag_ms is None else {"scheduleLagMs": lag_ms})
    if at is not None:
        made.checked_at = at
    return made


def test_metrics_report_what_the_database_and_redis_hold(any_app, redis_url):
    app = any_app
    now = utcnow()
    with app.app_context():
        own_id, location = configuration.instance_identity()
        shop = create_endpoint({**ENDPOINT, "name": "Shop"}).id
        broken = create_endpoint({**ENDPOINT, "name": "Broken"}).id
        record_results([(shop, result(True, 30.0, lag_ms=10.0, at=now - timedelta(seconds=20))),
                        (broken, result(False, None, lag_ms=30.0, at=now - timedelta(seconds=20)))],
                       instance_id=own_id, location=location)
        record_results([(shop, result(True, 42.0, lag_ms=20.0, at=now - timedelta(seconds=5)))],
                       instance_id=own_id, location=location)
        # Outside the window: counted nowhere, but in the outbox: an old result
        # of ours not yet acknowledged, and another instance's queued to catch
        # a new primary up.
        store_results([{**result_row(shop, result(True, 5.0, lag_ms=999.0, at=now - timedelta(minutes=30)),
                                     instance_id=own_id, location=location), "synced_at": None},
                       {**result_row(shop, result(True, 5.0, at=now - timedelta(minutes=30)),
                                     instance_id="someone-else", location="far"), "synced_at": None}])
        db.session.add(MonitoringInstance(id="dep-1", name="dep one", location="frankfurt", status="inactive",
                                          last_heartbeat_at=now - timedelta(seconds=90)))
        db.session.add(ProbeState(instance_id="dep-1", offline_since=now - timedelta(minutes=1),
                                  offline_reason="connectivity target failed"))
        db.session.add(ProbeState(instance_id=own_id))
        service = NotificationService(name="ops", kind="webhook", config={"url": "http://127.0.0.1:9/"})
        db.session.add(service)
        db.session.flush()
        for n, (status, kind) in enumerate([("sent", "down"), ("sent", "down"), ("failed", "down"),
                                            ("sent", "up")]):
            db.session.add(NotificationDelivery(notification_service_id=service.id, endpoint_id=broken,
                                                event=kind, status=status, dedupe_key=f"test:{n}"))
        db.session.commit()
    hold_lease(redis_url)
    register_worker(redis_url)
    checks = Queue("checks", connection=redis.Redis.from_url(redis_url))
    checks.enqueue("workers.jobs.checks.prune_results")
    checks.enqueue("workers.jobs.checks.prune_results")

    samples = scrape(app)

    assert value(samples, "monitor_endpoint_status", endpoint_id=shop, status="UP") == 1
    assert value(samples, "monitor_endpoint_status", endpoint_id=shop, status="DOWN") == 0
    assert value(samples, "monitor_endpoint_status", endpoint_id=broken, status="DOWN") == 1
    assert value(samples, "monitor_endpoint_status", endpoint_id=broken, endpoint="Broken", status="UP") == 0
    assert value(samples, "monitor_endpoint_last_response_time_seconds", endpoint_id=shop,
                 instance_id=own_id, location=location) == pytest.approx(0.042)
    assert value(samples, "monitor_endpoint_last_check_ok", endpoint_id=broken, location=location) == 0
    assert value(samples, "monitor_endpoint_last_check_timestamp_seconds", endpoint_id=shop) == pytest.approx(
        (now - timedelta(seconds=5)).timestamp(), abs=0.01)
    assert (value(samples, "monitor_endpoint_locations_voting", endpoint_id=shop),
            value(samples, "monitor_endpoint_locations_up", endpoint_id=shop),
            value(samples, "monitor_endpoint_locations_down", endpoint_id=broken)) == (1, 1, 1)
    assert value(samples, "monitor_checks_run_5m", instance_id=own_id, location=location) == 3
    assert value(samples, "monitor_checks_failed_5m", instance_id=own_id, location=location) == 1
    assert not [key for key in samples if key[0] == "monitor_checks_run_5m" and ("location", "far") in key[1]]
    assert value(samples, "monitor_schedule_lag_seconds", quantile="0.5") == pytest.approx(0.020)
    assert value(samples, "monitor_schedule_lag_seconds", quantile="0.99") == pytest.approx(0.030)
    assert value(samples, "monitor_schedule_lag_samples") == 3
    assert value(samples, "monitor_outbox_results") == 2
    assert value(samples, "monitor_instance_heartbeat_age_seconds", instance_id="dep-1",
                 location="frankfurt") == pytest.approx(90, abs=30)
    assert value(samples, "monitor_instance_status", instance_id="dep-1", status="inactive") == 1
    assert value(samples, "monitor_instance_status", instance_id="dep-1", status="active") == 0
    assert value(samples, "monitor_location_probe_offline", instance_id="dep-1", location="frankfurt") == 1
    assert value(samples, "monitor_location_probe_offline", instance_id=own_id, location=location) == 0
    assert value(samples, "monitor_notification_deliveries", status="sent", event="down") == 2
    assert value(samples, "monitor_notification_deliveries", status="failed", event="down") == 1
    assert value(samples, "monitor_notification_deliveries", status="sent", event="up") == 1
    assert value(samples, "monitor_cluster_epoch") == 0
    assert value(samples, "monitor_info", instance_id=own_id, role="standalone") == 1
    assert value(samples, "monitor_redis_up") == 1
    assert value(samples, "monitor_queue_jobs", queue="checks") == 2
    assert value(samples, "monitor_queue_jobs", queue="notify") == 0
    assert value(samples, "monitor_clock_lease_held") == 1
    assert value(samples, "monitor_workers") == 1


def test_metrics_follow_a_change_of_consensus_and_of_epoch(app, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    with app.app_context():
        own_id, location = configuration.instance_identity()
        shop = create_endpoint(ENDPOINT).id
        record_results([(shop, result(True, 12.0))], instance_id=own_id, location=location)
    assert value(scrape(app), "monitor_endpoint_status", endpoint_id=shop, status="UP") == 1
    with app.app_context():
        record_results([(shop, result(False, None))], instance_id=own_id, location=location)
        db.session.execute(update(InstanceConfig).where(InstanceConfig.key == configuration.EPOCH)
                           .values(value="3"))  # what a failover does
        db.session.commit()
    samples = scrape(app)
    assert value(samples, "monitor_endpoint_status", endpoint_id=shop, status="UP") == 0
    assert value(samples, "monitor_endpoint_status", endpoint_id=shop, status="DOWN") == 1
    assert value(samples, "monitor_cluster_epoch") == 3
    assert value(samples, "monitor_redis_up") == 0  # and the database's metrics still went out


def test_metrics_report_redis_down_and_still_answer(app, monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{closed_port()}/0")
    samples = scrape(app)
    assert value(samples, "monitor_redis_up") == 0
    assert not [key for key in samples if key[0] in {"monitor_queue_jobs", "monitor_workers"}]


def test_metrics_take_a_fixed_number_of_queries_whatever_the_endpoints(any_app, redis_url):
    app = any_app
    public = sibling(app, metrics_public=True)

    def add(count: int, prefix: str):
        with app.app_context():
            own_id, location = configuration.instance_identity()
            ids = [create_endpoint({**ENDPOINT, "name": f"{prefix}{n}"}).id for n in range(count)]
            record_results([(eid, result(n % 3 != 0, 10.0 + n, lag_ms=float(n))) for n, eid in enumerate(ids)],
                           instance_id=own_id, location=location)
            db.session.add(MonitoringInstance(id=f"{prefix}-instance", name=prefix, location=prefix,
                                              last_heartbeat_at=utcnow()))
            db.session.add(ProbeState(instance_id=f"{prefix}-instance"))
            db.session.commit()

    def scrape_once():
        response = public.test_client().get("/metrics")
        assert response.status_code == 200
        return response

    add(1, "a")
    one, answer = count_statements(public, scrape_once)
    assert answer.get_data(as_text=True).count('monitor_endpoint_status{') == 4
    add(49, "b")
    fifty, answer = count_statements(public, scrape_once)
    assert answer.get_data(as_text=True).count('monitor_endpoint_status{') == 50 * 4
    assert one == fifty <= 12


# --- the real process tree ---------------------------------------------------------


@pytest.mark.process_tree
def test_a_started_monitor_is_ready_serves_metrics_and_says_when_its_redis_dies(tmp_path):
    """``python -m app start``: its clock takes the lease and its workers
    register, so both ports answer ready; /metrics takes METRICS_TOKEN; once
    the embedded redis-server is killed, /readyz says so while /healthz
    still answers (the fault /health hid)."""
    import psutil
    import requests

    from tests.peers.process import ADMIN, MonitorProcess, monitor_env, wait_until

    token = "scrape-token-0123456789"
    env = monitor_env(tmp_path / "data", admin=ADMIN, METRICS_TOKEN=token)
    with MonitorProcess(env, tmp_path / "monitor.log") as monitor:
        def ready(base):
            return lambda: requests.get(base, timeout=10).status_code == 200

        wait_until(ready(f"{monitor.web}/readyz"), 60,
                   lambda: f"never ready: {requests.get(f'{monitor.web}/readyz', timeout=10).text}")
        wait_until(ready(f"{monitor.sync}/sync/api/readyz"), 30, "the sync port never answered ready")

        assert requests.get(f"{monitor.web}/metrics", timeout=10).status_code == 401
        scraped = requests.get(f"{monitor.web}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert scraped.status_code == 200
        samples = {sample.name: sample.value for family in text_string_to_metric_families(scraped.text)
                   for sample in family.samples if not sample.labels}
        assert samples["monitor_redis_up"] == 1 and samples["monitor_clock_lease_held"] == 1
        assert samples["monitor_workers"] >= 1

        [redis_server] = [proc for proc in monitor.leftovers() if proc.name().startswith("redis-server")]
        redis_server.kill()
        psutil.wait_procs([redis_server], timeout=10)

        def not_ready():
            response = requests.get(f"{monitor.web}/readyz", timeout=10)
            return response.status_code == 503 and response.json()

        body = wait_until(not_ready, 20, "/readyz kept answering ready with its Redis killed", interval=0.2)
        assert body["failing"] == ["redis", "clock", "workers"]
        assert requests.get(f"{monitor.web}/healthz", timeout=10).status_code == 200


def test_readiness_logs_when_its_answer_changes_not_at_every_probe(app, redis_url, caplog):
    client = app.test_client()
    register_worker(redis_url)
    with caplog.at_level("INFO", logger="app.services.readiness"):
        for _ in range(3):
            assert client.get("/readyz").status_code == 503  # no clock
        hold_lease(redis_url)
        for _ in range(3):
            assert client.get("/readyz").status_code == 200
    lines = [record.getMessage() for record in caplog.records if record.name == "app.services.readiness"]
    assert lines[-2:] == [f"readiness: not ready: clock: no clock holds the lease ({LEASE_KEY}): "
                          "nothing is scheduling checks", "readiness: ready again"]
    assert len(lines) <= 3  # an earlier test's state may add one change at the start
