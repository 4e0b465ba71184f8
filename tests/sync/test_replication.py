"""Replication to failover candidates: a candidate holds what a primary
needs (services with secrets, links, users, API keys, settings, membership,
ongoing incidents) and nothing else does; a malformed replica changes
nothing; the configuration version moves for keys and membership but not
for heartbeats; inherited alerts wait until a promotion; a dependent's
outbox survives pruning. A real primary's sync API on loopback and a real
dependent, on SQLite and on PostgreSQL."""
from __future__ import annotations

import logging
import os
import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, make_url, select, text
from werkzeug.serving import make_server

from app.checks import CheckResult
from app.config import ROLE_PRIMARY
from app.extensions import db
from app.models import (
    DELIVERY_PENDING,
    ApiKey,
    Endpoint,
    MonitoringInstance,
    NotificationDelivery,
    NotificationService,
    ResponseTime,
    StatusChange,
    User,
    utcnow,
)
from app.models.notification import DELIVERY_INHERITED
from app.services import alerts, configuration, status_pages
from app.services.accounts import create_api_key, create_user, revoke_api_key
from app.services.endpoints import create_endpoint, create_endpoints, get_endpoint, update_endpoint
from app.services.notifications import create_service, delete_service, get_service
from app.services.results import record_results
from app.services.sync import dependent, primary, replication
from tests.conftest import POSTGRES_URL, SECRET, instance_app, make_app, migrate, reset_postgres
from tests.peers.webhook import WebhookReceiver

PASSWORD = "correct horse battery"
PRIMARY_ENV = {"ENABLE_SYNC_API": "true", "SYNC_SHARED_SECRET": SECRET, "INSTANCE_NAME": "fra-1",
               "INSTANCE_LOCATION": "frankfurt"}


@pytest.fixture(scope="session")
def pg_databases():
    """Make PostgreSQL databases of this run's own on the TEST_DATABASE_URL
    server, one per name asked for; all dropped at the end."""
    if not POSTGRES_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    server = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    made: dict[str, str] = {}

    def database(name: str) -> str:
        if name not in made:
            made[name] = f"replication_{os.getpid()}_{uuid.uuid4().hex[:8]}_{name}"
            with server.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{made[name]}"'))
        return make_url(POSTGRES_URL).set(database=made[name]).render_as_string(hide_password=False)

    yield database
    with server.connect() as conn:
        for name in made.values():
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def instances(request, tmp_path, migrated_sqlite_template):
    """Makes instance apps on a database each: SQLite files, or PostgreSQL
    databases (the second run)."""
    made = []

    def instance(name: str, env: dict, *, serve: str = "none"):
        folder = tmp_path / name
        if request.param == "sqlite":
            application = instance_app(folder, migrated_sqlite_template, env, serve=serve)
        else:
            url = request.getfixturevalue("pg_databases")(name)
            reset_postgres(url)
            folder.mkdir(parents=True, exist_ok=True)
            application = make_app(folder, {**env, "DATABASE_URL": url}, serve=serve)
            # Migrations set logging up for alembic's command line; a test
            # reading the log (caplog) needs its own handlers back.
            root = logging.getLogger()
            handlers, level = root.handlers[:], root.level
            migrate(application)
            root.handlers[:], root.level = handlers, level
        made.append(application)
        return application

    instance.dialect = request.param
    yield instance
    for application in made:
        with application.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def cluster(instances):
    """A primary whose sync API listens on loopback, and a way to start members of it."""
    primary_app = instances("primary", PRIMARY_ENV, serve="sync")
    with primary_app.app_context():
        primary.register_self()
    server = make_server("127.0.0.1", 0, primary_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"

    def member(name: str, order: int):
        return instances(name, {"PRIMARY_SYNC_URL": url, "SYNC_SHARED_SECRET": SECRET, "INSTANCE_NAME": name,
                                "INSTANCE_LOCATION": f"{name}-lab", "FAILOVER_ORDER": str(order)})

    yield primary_app, member
    server.shutdown()


@pytest.fixture
def webhook():
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


def sync(application) -> dict:
    with application.app_context():
        return dependent.sync_once()


def snapshot(application) -> dict:
    with application.app_context():
        return replication.candidate_snapshot()


def version(application) -> int:
    with application.app_context():
        return configuration.config_version()


def configure_primary(primary_app) -> dict:
    """A service with secrets, an endpoint alerting through it, two users, a
    key and a published status page; returns what a candidate should get."""
    with primary_app.app_context():
        service = create_service({"name": "ops hook", "kind": "webhook", "config": {
            "url": "http://127.0.0.1:9/hook?token=T0KEN", "headers": {"Authorization": "Bearer s3cret"}}})
        spare = create_service({"name": "spare", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/spare"}})
        endpoint = create_endpoint({"name": "shop", "checkType": "tcp", "target": "127.0.0.1", "port": 9,
                                    "group": "Shop", "notificationServiceIds": [service.id, spare.id]})
        create_user("ops@example.org", PASSWORD, is_admin=True)
        create_user("viewer@example.org", PASSWORD)
        _, key = create_api_key("ops@example.org", "ci")
        status_pages.set_published("Shop", True)
        return {"service": service.id, "spare": spare.id, "endpoint": endpoint.id, "key": key,
                "primary": configuration.instance_id()}


# --- what a candidate holds ---------------------------------------------------------


def test_a_candidate_holds_services_with_secrets_links_users_keys_settings_and_membership(cluster):
    primary_app, member = cluster
    made = configure_primary(primary_app)
    candidate = member("candidate", 1)
    with candidate.app_context():
        # The admin a candidate made from its environment gives way to the primary's accounts.
        create_user("local-admin@example.org", PASSWORD, is_admin=True)
        own_id = configuration.instance_id()
    sync(candidate)

    assert snapshot(candidate) == snapshot(primary_app)
    assert version(candidate) == version(primary_app)
    with candidate.app_context():
        assert sorted(db.session.execute(select(User.email)).scalars()) == ["ops@example.org", "viewer@example.org"]
        key = db.session.execute(select(ApiKey)).scalar_one()
        assert key.matches(made["key"]) and key.user.email == "ops@example.org"
        service = db.session.get(NotificationService, made["service"])
        assert service.config["headers"] == {"Authorization": "Bearer s3cret"}
        assert "T0KEN" in service.config["url"]
        assert sorted(s.id for s in get_endpoint(made["endpoint"]).notification_services) == [
            made["service"], made["spare"]]
        assert status_pages.published_groups() == ["Shop"]
        members = {m.id: (m.role, m.failover_order) for m in db.session.execute(select(MonitoringInstance)).scalars()}
        assert members == {made["primary"]: ("primary", 0), own_id: ("dependent", 1)}


def test_a_member_with_failover_order_0_gets_no_secrets_accounts_or_incidents(cluster):
    primary_app, member = cluster
    made = configure_primary(primary_app)
    with primary_app.app_context():
        db.session.execute(db.update(Endpoint).values(alerted_status="DOWN"))
        db.session.commit()
    follower = member("follower", 0)
    sync(follower)
    sync(follower)  # a heartbeat more, whose reply would carry incidents to a candidate
    with follower.app_context():
        assert db.session.get(Endpoint, made["endpoint"]) is not None  # it checks the endpoints
        for model in (NotificationService, User, ApiKey):
            assert db.session.execute(select(func.count()).select_from(model)).scalar_one() == 0, model
        # The membership alone (names, places, failover order), for its instances page.
        members = {m.id: m.failover_order for m in db.session.execute(select(MonitoringInstance)).scalars()}
        assert members == {made["primary"]: 0, configuration.instance_id(): 0}
        assert status_pages.published_groups() == []
        assert db.session.get(Endpoint, made["endpoint"]).alerted_status is None
        assert db.session.execute(select(func.count()).select_from(NotificationDelivery)).scalar_one() == 0
        follower_id = configuration.instance_id()
    with primary_app.app_context():
        config = primary.sync_configuration(follower_id)
        assert "replica" not in config and {m["instanceId"] for m in config["members"]} == set(members)


def test_what_the_primary_deletes_the_candidate_deletes(cluster):
    primary_app, member = cluster
    made = configure_primary(primary_app)
    candidate = member("candidate", 1)
    sync(candidate)
    with primary_app.app_context():
        delete_service(get_service(made["spare"]))
        viewer = db.session.execute(select(User).where(User.email == "viewer@example.org")).scalar_one()
        db.session.delete(viewer)
        revoke_api_key(db.session.execute(select(ApiKey.id)).scalar_one())
        status_pages.set_published("Shop", False)
        third = create_service({"name": "pager", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/p"}})
        update_endpoint(get_endpoint(made["endpoint"]), {"notificationServiceIds": [third.id]}, partial=True)
    sync(candidate)  # the heartbeat's reply names a newer version, so the round pulls it

    assert snapshot(candidate) == snapshot(primary_app)
    with candidate.app_context():
        assert sorted(db.session.execute(select(NotificationService.name)).scalars()) == ["ops hook", "pager"]
        assert [s.name for s in get_endpoint(made["endpoint"]).notification_services] == ["pager"]
        assert list(db.session.execute(select(User.email)).scalars()) == ["ops@example.org"]
        key = db.session.execute(select(ApiKey)).scalar_one()
        assert key.revoked_at is not None and not key.matches(made["key"])
        assert status_pages.published_groups() == []


def test_endpoints_created_in_bulk_reach_members_in_one_pull_at_one_version(cluster):
    primary_app, member = cluster
    made = configure_primary(primary_app)
    candidate, follower = member("candidate", 1), member("follower", 0)
    sync(candidate)
    sync(follower)
    before = version(primary_app)
    batch = [{"name": f"bulk {i}", "checkType": "tcp", "target": "127.0.0.1", "port": 1000 + i,
              "notificationServiceIds": [made["spare"]] if i % 2 else []} for i in range(200)]
    with primary_app.app_context():
        ids = create_endpoints(batch)
    assert version(primary_app) == before + 1

    sync(candidate)
    sync(follower)
    assert snapshot(candidate) == snapshot(primary_app)
    for application in (candidate, follower):
        assert version(application) == before + 1
        with application.app_context():
            stored = dict(db.session.execute(select(Endpoint.id, Endpoint.name).where(Endpoint.id.in_(ids))).all())
            assert stored == {endpoint_id: f"bulk {i}" for i, endpoint_id in enumerate(ids)}
    with candidate.app_context():
        assert [s.id for s in get_endpoint(ids[1]).notification_services] == [made["spare"]]
        assert get_endpoint(ids[0]).notification_services == []


def test_a_candidate_s_own_consensus_stays_of_its_one_location(cluster):
    """The membership it holds (two active members) does not make it wait for
    a second location, as a primary would."""
    primary_app, member = cluster
    with primary_app.app_context():
        endpoint_id = create_endpoint({"name": "db", "checkType": "tcp", "target": "127.0.0.1", "port": 9}).id
    candidate = member("candidate", 1)
    sync(candidate)
    with candidate.app_context():
        assert db.session.execute(select(func.count()).select_from(MonitoringInstance)).scalar_one() == 2
        record_results([(endpoint_id, CheckResult(is_ok=False, check_type="tcp", failure_reason="refused"))],
                       instance_id=configuration.instance_id(), location="candidate-lab")
        assert db.session.get(Endpoint, endpoint_id).status == "DOWN"


# --- a malformed replica --------------------------------------------------------------


def _break_password(replica):
    del replica["users"][0]["passwordHash"]


def _orphan_key(replica):
    replica["apiKeys"][0]["userId"] = 999


def _service_config_as_text(replica):
    replica["notificationServices"][0]["config"] = "url=http://127.0.0.1:9/"


def _unknown_field(replica):
    replica["surprise"] = True


def _user_twice(replica):
    replica["users"].append(dict(replica["users"][0]))


def _link_to_nothing(replica):
    replica["endpointNotifications"].append({"endpointId": 1, "notificationServiceId": 404})


@pytest.mark.parametrize(("breaks", "field"), [
    (_break_password, "replica.users.0.passwordHash"),
    (_orphan_key, "replica.apiKeys.0.userId"),
    (_service_config_as_text, "replica.notificationServices.0.config"),
    (_unknown_field, "replica.surprise"),
    (_link_to_nothing, "replica.endpointNotifications.1.notificationServiceId"),
    (_user_twice, "replica.users.1.id"),
])
def test_a_malformed_replica_changes_nothing_and_names_the_field(instances, httpserver, caplog, breaks, field):
    """A hostile primary (a real HTTP server on loopback) sends a good
    configuration, then one whose replica is broken."""
    candidate = instances("candidate", {"PRIMARY_SYNC_URL": httpserver.url_for("/").rstrip("/"),
                                        "SYNC_SHARED_SECRET": SECRET, "FAILOVER_ORDER": "1",
                                        "CONNECTION_TIMEOUT": "2"})
    when = utcnow().isoformat()
    endpoint = {"name": "shop", "checkType": "tcp", "target": "127.0.0.1", "port": 9, "options": {},
                "intervalSeconds": 60, "timeoutSeconds": 5.0, "failureThreshold": 1, "successThreshold": 1,
                "isPaused": False, "group": None, "reminderIntervalMinutes": None, "locations": None,
                "consensusRule": "majority", "alertOnPartial": False, "certExpiryDays": 14}
    replica = {
        "notificationServices": [{"id": 3, "name": "hook", "kind": "webhook",
                                  "config": {"url": "http://127.0.0.1:9/", "headers": {}, "timeoutSeconds": 10.0},
                                  "isEnabled": True, "isDefault": False, "createdAt": when}],
        "endpointNotifications": [{"endpointId": 1, "notificationServiceId": 3}],
        "users": [{"id": 7, "email": "ops@example.org", "passwordHash": "scrypt:x", "isAdmin": True,
                   "createdAt": when}],
        "apiKeys": [{"id": 2, "userId": 7, "name": "ci", "prefix": "abc", "keyHash": "0" * 64,
                     "createdAt": when, "revokedAt": None}],
        "settings": [{"key": "status_pages", "value": {"groups": ["Shop"]}}],
        "instances": [{"instanceId": "primary-0001", "instanceName": "fra-1", "location": "frankfurt",
                       "syncUrl": "http://127.0.0.1:1", "role": "primary", "failoverOrder": 0, "status": "active",
                       "version": "1", "registeredAt": when}],
    }

    def serve(config_version, config):
        httpserver.clear_all_handlers()
        httpserver.expect_request("/sync/api/register", method="POST").respond_with_json(
            {"instanceId": "x", "token": "t0ken", "epoch": 0}, status=201)
        httpserver.expect_request("/sync/api/heartbeat", method="PUT").respond_with_json(
            {"acknowledged": [], "rejected": [], "configVersion": config_version, "epoch": 0})
        httpserver.expect_request("/sync/api/endpoints").respond_with_json(config)

    serve(1, {"configVersion": 1, "epoch": 0, "endpoints": [{"id": 1, **endpoint}], "replica": replica})
    sync(candidate)
    before = snapshot(candidate)
    assert [u["email"] for u in before["users"]] == ["ops@example.org"]

    broken = {key: [dict(row) for row in rows] for key, rows in replica.items()}
    broken["users"][0]["email"] = "someone-else@example.org"  # changes that must not land either
    breaks(broken)
    serve(2, {"configVersion": 2, "epoch": 0, "endpoints": [{"id": 1, **endpoint}, {"id": 2, **endpoint}],
              "replica": broken})
    caplog.set_level(logging.ERROR, logger="app.services.sync.replication")
    with pytest.raises(dependent.MalformedReply):
        sync(candidate)

    assert snapshot(candidate) == before
    assert version(candidate) == 1
    with candidate.app_context():
        assert list(db.session.execute(select(Endpoint.id)).scalars()) == [1]  # the pull's endpoints rolled back too
    assert field in caplog.text


# --- the configuration version ---------------------------------------------------------


def test_heartbeats_do_not_move_the_configuration_version(cluster):
    primary_app, member = cluster
    made = configure_primary(primary_app)
    candidate = member("candidate", 1)
    sync(candidate)
    settled = version(primary_app)
    with candidate.app_context():
        record_results([(made["endpoint"], CheckResult(is_ok=True, check_type="tcp", response_time_ms=3.0))],
                       instance_id=configuration.instance_id(), location="candidate-lab")
    assert sync(candidate)["acknowledged"] == 1
    sync(candidate)
    with primary_app.app_context():
        primary.register_self()  # the clock keeps the primary's own row current
        primary.mark_silent_instances()
        assert db.session.execute(select(func.count()).select_from(ResponseTime)).scalar_one() == 1
    assert version(primary_app) == settled
    assert version(candidate) == settled


def test_api_keys_and_membership_changes_move_the_version_and_reach_the_candidate(cluster):
    primary_app, member = cluster
    configure_primary(primary_app)
    candidate = member("candidate", 1)
    sync(candidate)
    with candidate.app_context():
        candidate_id = configuration.instance_id()

    def bumps(change) -> int:
        before = version(primary_app)
        with primary_app.app_context():
            change()
            db.session.commit()
        return version(primary_app) - before

    def new_key():
        create_api_key("viewer@example.org", "deploy")

    def key_used():
        key = db.session.execute(select(ApiKey).order_by(ApiKey.id)).scalars().first()
        key.last_used_at = utcnow()

    def moved_up():
        db.session.get(MonitoringInstance, candidate_id).failover_order = 2

    def renamed():
        db.session.get(MonitoringInstance, candidate_id).name = "candidate-renamed"

    def heard_from():
        row = db.session.get(MonitoringInstance, candidate_id)
        row.last_heartbeat_at, row.status = utcnow(), "inactive"
        row.system_info, row.connection_info = {"cpuPercent": 99.0}, {"outboxSize": 5}
        row.config_version, row.version = 123, "9.9.9"

    assert bumps(new_key) == 1
    assert bumps(lambda: revoke_api_key(db.session.execute(select(func.max(ApiKey.id))).scalar_one())) == 1
    assert bumps(key_used) == 0
    assert bumps(heard_from) == 0
    assert bumps(moved_up) == 1
    assert bumps(renamed) == 1

    sync(candidate)
    with candidate.app_context():
        row = db.session.get(MonitoringInstance, candidate_id)
        assert (row.failover_order, row.name) == (2, "candidate-renamed")
        assert db.session.execute(select(func.count()).select_from(ApiKey)).scalar_one() == 2
    assert snapshot(candidate) == snapshot(primary_app)

    with primary_app.app_context():
        before = configuration.config_version()
        primary.delete_instance(candidate_id)
        assert configuration.config_version() == before + 1


# --- incidents -------------------------------------------------------------------------


def test_incidents_reach_a_candidate_as_inherited_alerts_that_only_a_promotion_sends(cluster, webhook):
    primary_app, member = cluster
    with primary_app.app_context():
        primary_id = configuration.instance_id()
        service_id = create_service({"name": "ops", "kind": "webhook", "config": {"url": webhook.url()},
                                     "isDefault": True}).id
        # Checked by the primary alone, so one result decides.
        endpoint_id = create_endpoint({"name": "shop", "checkType": "tcp", "target": "127.0.0.1", "port": 9,
                                       "locations": [primary_id]}).id

    def primary_sees(ok: bool) -> int:
        with primary_app.app_context():
            record_results([(endpoint_id, CheckResult(is_ok=ok, check_type="tcp", response_time_ms=1.0 if ok else None,
                                                      failure_reason=None if ok else "refused"))],
                           instance_id=primary_id, location="frankfurt")
            [delivery_id] = alerts.raise_alerts([endpoint_id])
            return delivery_id

    down_id = primary_sees(False)
    candidate = member("candidate", 1)
    sync(candidate)
    sync(candidate)  # a second heartbeat: the first one's reply came before the membership was pulled
    with candidate.app_context():
        assert db.session.get(Endpoint, endpoint_id).alerted_status == "DOWN"
        inherited = db.session.execute(select(NotificationDelivery)).scalar_one()
        assert inherited.status == DELIVERY_INHERITED and inherited.status_change_id is None
        assert inherited.dedupe_key.startswith(f"{primary_id}:") and inherited.event == "down"
        assert alerts.deliver(inherited.id) == "skipped"
        assert alerts.due_deliveries() == [] and alerts.release_stale_claims() == 0
        assert db.session.get(NotificationDelivery, inherited.id).status == DELIVERY_INHERITED
    assert webhook.requests == []

    # The primary sends the down alert and sees the endpoint recover.
    with primary_app.app_context():
        assert alerts.deliver(down_id) == "sent"
    up_id = primary_sees(True)
    sync(candidate)
    with candidate.app_context():
        assert db.session.get(Endpoint, endpoint_id).alerted_status == "UP"
        [row] = db.session.execute(select(NotificationDelivery)).scalars()
        assert (row.event, row.status) == ("up", DELIVERY_INHERITED)  # the sent one is gone
        inherited_up = row.id

    # Promoted (as the failover service does it): the inherited alert is this instance's to send.
    with candidate.app_context():
        configuration.set_role(ROLE_PRIMARY, new_epoch=1, new_primary_url=None)
        db.session.commit()
        assert replication.adopt_inherited_deliveries() == 1
        row = db.session.get(NotificationDelivery, inherited_up)
        assert row.status == DELIVERY_PENDING and row.next_attempt_at <= utcnow()
        assert alerts.deliver(inherited_up) == "sent"
    assert [p["event"] for p in webhook.payloads] == ["down", "up"]
    with primary_app.app_context():
        assert db.session.get(NotificationDelivery, up_id).status == DELIVERY_PENDING  # never sent by the primary
    assert webhook.payloads[1]["endpoint"]["id"] == endpoint_id


def test_malformed_incidents_change_nothing_and_the_round_goes_on(instances, httpserver, caplog):
    candidate = instances("candidate", {"PRIMARY_SYNC_URL": httpserver.url_for("/").rstrip("/"),
                                        "SYNC_SHARED_SECRET": SECRET, "FAILOVER_ORDER": "1",
                                        "CONNECTION_TIMEOUT": "2"})
    with candidate.app_context():
        db.session.add(Endpoint(id=5, name="e", check_type="tcp", target="127.0.0.1", port=9, options={}))
        db.session.commit()
        record_results([(5, CheckResult(is_ok=True, check_type="tcp"))],
                       instance_id=configuration.instance_id(), location="lab")
        db.session.execute(db.update(Endpoint).values(alerted_status="DOWN"))  # as the primary said before
        db.session.commit()
        sent_id = db.session.execute(select(ResponseTime.result_id)).scalar_one()
        client = dependent.client()
    httpserver.expect_request("/sync/api/heartbeat", method="PUT").respond_with_json(
        {"acknowledged": [sent_id], "rejected": [], "configVersion": 0, "epoch": 0,
         "incidents": {"alerted": {"5": "SIDEWAYS"}, "openDeliveries": []}})
    caplog.set_level(logging.ERROR, logger="app.services.sync.replication")
    with candidate.app_context():
        assert dependent.send_heartbeat(client, "t0ken")["acknowledged"] == 1
        assert db.session.get(Endpoint, 5).alerted_status == "DOWN"
        assert dependent.outbox_size() == 0
    assert "incidents.alerted.5" in caplog.text


# --- dedupe keys -----------------------------------------------------------------------


def test_change_alerts_are_keyed_by_instance_so_inherited_keys_never_collide(app, webhook):
    with app.app_context():
        own_id = configuration.instance_id()
        service_id = create_service({"name": "ops", "kind": "webhook", "config": {"url": webhook.url()},
                                     "isDefault": True}).id
        endpoint_id = create_endpoint({"name": "shop", "checkType": "tcp", "target": "127.0.0.1", "port": 9}).id
        record_results([(endpoint_id, CheckResult(is_ok=False, check_type="tcp", failure_reason="refused"))],
                       instance_id=own_id, location="here")
        change_id = db.session.execute(select(StatusChange.id)).scalar_one()
        # An alert inherited from an old primary whose own change had the same id.
        db.session.add(NotificationDelivery(notification_service_id=service_id, endpoint_id=endpoint_id,
                                            event="down", status=DELIVERY_INHERITED, payload={},
                                            dedupe_key=f"old-primary-id:{change_id}:{service_id}"))
        db.session.commit()
        [delivery_id] = alerts.raise_alerts([endpoint_id])
        assert alerts.raise_alerts([endpoint_id]) == [delivery_id]  # raised once, however often asked
        row = db.session.get(NotificationDelivery, delivery_id)
        assert row.dedupe_key == f"{own_id}:{change_id}:{service_id}"
        assert row.status_change_id == change_id and row.status == DELIVERY_PENDING


# --- the outbox ------------------------------------------------------------------------


def _old_and_new_results(application, *, synced: int, unsent: int, recent: int) -> dict:
    old = utcnow() - timedelta(days=40)
    with application.app_context():
        endpoint_id = create_endpoint({"name": "e", "checkType": "tcp", "target": "127.0.0.1", "port": 9}).id
        own = configuration.instance_id()

        def stored(count, at):
            record_results([(endpoint_id, CheckResult(is_ok=True, check_type="tcp", checked_at=at + timedelta(seconds=n)))
                            for n in range(count)], instance_id=own, location="lab")

        stored(synced, old)
        if configuration.is_dependent():
            dependent.mark_synced(list(db.session.execute(select(ResponseTime.result_id)).scalars()))
            db.session.commit()
        stored(unsent, old + timedelta(hours=1))
        stored(recent, utcnow() - timedelta(hours=1))
        return {"endpoint": endpoint_id}


def _result_counts(application) -> tuple[int, int]:
    with application.app_context():
        rows = db.session.execute(select(ResponseTime.synced_at)).scalars().all()
        return sum(1 for r in rows if r is None), len(rows)


def test_pruning_never_deletes_a_dependent_s_unsent_results(instances):
    from app.services import retention

    member = instances("member", {"PRIMARY_SYNC_URL": "http://127.0.0.1:9", "SYNC_SHARED_SECRET": SECRET})
    _old_and_new_results(member, synced=5, unsent=3, recent=2)
    with member.app_context():
        pruned = retention.prune(batch=2, pause=0)  # in three deletes of at most two
    assert pruned.rows["results"] == 5 and pruned.finished
    assert _result_counts(member) == (5, 5)  # the three old unsent ones and the two recent ones


def test_pruning_on_a_primary_goes_by_age_alone_in_batches(instances, monkeypatch):
    from workers import jobs
    from workers.jobs.checks import prune_results

    primary_app = instances("primary", PRIMARY_ENV, serve="none")
    _old_and_new_results(primary_app, synced=5, unsent=3, recent=2)
    monkeypatch.setattr(jobs, "_app", primary_app)
    assert prune_results()["pruned"]["results"] == 8
    assert _result_counts(primary_app) == (0, 2)


def test_an_outbox_past_its_bound_is_warned_about_each_round_and_shown(tmp_path, migrated_sqlite_template,
                                                                      monkeypatch, caplog):
    from tests.ui.conftest import sign_in

    monkeypatch.setattr(dependent, "OUTBOX_WARN_AT", 2)
    member = instance_app(tmp_path, migrated_sqlite_template, {
        "PRIMARY_SYNC_URL": "http://127.0.0.1:9", "SYNC_SHARED_SECRET": SECRET, "CONNECTION_TIMEOUT": "1"},
        serve="web")
    with member.app_context():
        endpoint_id = create_endpoint({"name": "e", "checkType": "tcp", "target": "127.0.0.1", "port": 9}).id
        record_results([(endpoint_id, CheckResult(is_ok=True, check_type="tcp"))],
                       instance_id=configuration.instance_id(), location="lab")
        assert dependent.link_status()["outbox_over_bound"] is False
        record_results([(endpoint_id, CheckResult(is_ok=True, check_type="tcp")) for _ in range(2)],
                       instance_id=configuration.instance_id(), location="lab")
        assert dependent.link_status()["outbox_over_bound"] is True
        caplog.set_level(logging.WARNING, logger="app.services.sync.dependent")
        for _ in range(2):
            with pytest.raises(dependent.PrimaryUnavailable):
                dependent.sync_once()  # nothing listens on port 9
        warnings = [r for r in caplog.records if "results wait for the primary" in r.getMessage()]
        assert len(warnings) == 2 and "3 results" in warnings[0].getMessage()
        create_user("admin@example.org", PASSWORD, is_admin=True)
    web = member.test_client()
    assert sign_in(web).status_code == 302
    html = web.get("/instances").get_data(as_text=True)
    assert "More than 2 results are waiting for the primary" in html
    with member.app_context():
        db.session.remove()
        db.engine.dispose()
