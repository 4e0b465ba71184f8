"""The primary's sync API: registration, tokens, heartbeats, configuration,
and refusal of everything malformed, oversized or unauthenticated."""
import hashlib
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import (
    LocationStatus,
    InstanceToken,
    MonitoringInstance,
    ResponseTime,
    utcnow,
)
from app.services import configuration
from app.services.endpoints import create_endpoint
from tests.conftest import SECRET

DEPENDENT_ID = "5f0c2a6e-0d7a-4c47-9d54-6a1f3a0b7c11"


def registration(**change):
    return {"instanceId": DEPENDENT_ID, "instanceName": "dep-1", "location": "eu-west",
            "syncUrl": "http://127.0.0.1:4002", "failoverOrder": 1, "heartbeatInterval": 5, **change}


@pytest.fixture
def sync(primary_app):
    return primary_app.test_client()


@pytest.fixture
def token(sync):
    reply = sync.post("/sync/api/register", json=registration(), headers={"X-Cluster-Secret": SECRET})
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()["token"]


@pytest.fixture
def endpoint_id(primary_app):
    with primary_app.app_context():
        return create_endpoint({"name": "web", "checkType": "http", "target": "http://127.0.0.1:9/"}).id


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def result(endpoint_id, **change):
    return {"resultId": str(uuid.uuid4()), "endpointId": endpoint_id, "isOk": True, "responseTime": 12.5,
            "status": "UP", "failureReason": None, "checkType": "http", "metadata": {"httpStatus": 200},
            "checkedAt": utcnow().isoformat(), **change}


def heartbeat(batch=(), **change):
    return {"instanceId": DEPENDENT_ID, "epoch": 0, "configVersion": 1,
            "systemInfo": {"cpuPercent": 3.5, "memoryPercent": 40.0},
            "connectionStatus": {"primaryReachable": True, "consecutiveFailures": 0},
            "results": list(batch), **change}


def count(app, model):
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def test_it_registers_an_instance_and_stores_only_the_tokens_hash(primary_app, sync):
    reply = sync.post("/sync/api/register", json=registration(), headers={"X-Cluster-Secret": SECRET})
    assert reply.status_code == 201
    body = reply.get_json()
    assert body["instanceId"] == DEPENDENT_ID and body["epoch"] == 0
    with primary_app.app_context():
        row = db.session.execute(select(InstanceToken)).scalar_one()
        assert row.token_hash == hashlib.sha256(body["token"].encode()).hexdigest()
        assert body["token"] not in row.token_hash
        instance = db.session.get(MonitoringInstance, DEPENDENT_ID)
        assert (instance.location, instance.status, instance.failover_order) == ("eu-west", "active", 1)


@pytest.mark.parametrize("secret", [None, "", "wrong-secret-0123456789"])
def test_it_refuses_registration_without_the_join_secret(primary_app, sync, secret):
    headers = {} if secret is None else {"X-Cluster-Secret": secret}
    reply = sync.post("/sync/api/register", json=registration(), headers=headers)
    assert reply.status_code == 401
    assert count(primary_app, MonitoringInstance) == 0


def test_it_rate_limits_failed_registrations(primary_app, sync):
    from app.blueprints.sync_api import views

    views._failures.clear()
    codes = [sync.post("/sync/api/register", json=registration(), headers={"X-Cluster-Secret": "nope"}).status_code
             for _ in range(views.REGISTER_FAILURES_ALLOWED + 1)]
    assert codes[:-1] == [401] * views.REGISTER_FAILURES_ALLOWED and codes[-1] == 429
    views._failures.clear()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"instanceName": "x", "location": "y"}, "instanceId"),
        (registration(instanceId="bad id!"), "instanceId"),
        (registration(failoverOrder="first"), "failoverOrder"),
        (registration(syncUrl="ftp://x"), "syncUrl"),
        (registration(extra=True), "extra"),
        (registration(location=""), "location"),
    ],
)
def test_it_rejects_bad_registrations_naming_the_field(primary_app, sync, payload, field):
    reply = sync.post("/sync/api/register", json=payload, headers={"X-Cluster-Secret": SECRET})
    assert reply.status_code == 400
    assert field in reply.get_json()["fields"]
    assert count(primary_app, MonitoringInstance) == 0


TOKEN_ROUTES = [
    ("put", "/sync/api/heartbeat"),
    ("get", "/sync/api/instances"),
    ("delete", f"/sync/api/instances/{DEPENDENT_ID}"),
    ("get", "/sync/api/endpoints"),
    ("get", "/sync/api/endpoints/1"),
    ("get", "/sync/api/notification-services"),
    ("get", "/sync/api/failover-order"),
    ("post", "/sync/api/promote"),
    ("post", f"/sync/api/demote/{DEPENDENT_ID}"),
]


def forged_token(primary_app):
    from itsdangerous import URLSafeSerializer

    return URLSafeSerializer("another-key", salt="sync-token").dumps(
        {"iid": DEPENDENT_ID, "jti": "x", "perm": "sync", "exp": 4102444800})


@pytest.mark.parametrize(("method", "path"), TOKEN_ROUTES)
def test_every_route_refuses_missing_bad_expired_and_revoked_tokens(primary_app, sync, token, method, path):
    call = getattr(sync, method)
    assert call(path).status_code == 401
    assert call(path, headers={"Authorization": "Bearer garbage"}).status_code == 401
    assert call(path, headers={"Authorization": f"Basic {token}"}).status_code == 401
    assert call(path, headers=bearer(forged_token(primary_app))).status_code == 401
    assert call(path, headers=bearer(token[:-2] + "xx")).status_code == 401

    with primary_app.app_context():  # expired (by the stored expiry)
        row = db.session.execute(select(InstanceToken)).scalar_one()
        row.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert call(path, headers=bearer(token)).status_code == 401

    with primary_app.app_context():  # live again, then revoked
        row = db.session.execute(select(InstanceToken)).scalar_one()
        row.expires_at, row.revoked_at = utcnow() + timedelta(hours=1), utcnow()
        db.session.commit()
    assert call(path, headers=bearer(token)).status_code == 401
    assert count(primary_app, ResponseTime) == 0
    assert count(primary_app, MonitoringInstance) == 1


def test_it_refuses_a_token_whose_signed_expiry_has_passed(primary_app, sync):
    from app.services.sync import tokens

    sync.post("/sync/api/register", json=registration(), headers={"X-Cluster-Secret": SECRET})
    with primary_app.app_context():
        token, _ = tokens.issue(DEPENDENT_ID, ttl=-5)
        db.session.commit()
    assert sync.get("/sync/api/instances", headers=bearer(token)).status_code == 401


def test_it_stores_heartbeat_results_once_and_acknowledges_them(primary_app, sync, token, endpoint_id):
    results = [result(endpoint_id), result(endpoint_id, isOk=False, status="DOWN", failureReason="HTTP 500")]
    orphan = result(999)
    first = sync.put("/sync/api/heartbeat", json=heartbeat(results + [orphan]), headers=bearer(token))
    assert first.status_code == 200, first.get_json()
    body = first.get_json()
    assert sorted(body["acknowledged"]) == sorted(r["resultId"] for r in results)
    assert body["rejected"] == [{"resultId": orphan["resultId"], "reason": "no endpoint with id 999"}]
    assert body["epoch"] == 0

    replay = sync.put("/sync/api/heartbeat", json=heartbeat(results), headers=bearer(token))
    assert replay.status_code == 200
    assert sorted(replay.get_json()["acknowledged"]) == sorted(r["resultId"] for r in results)
    with primary_app.app_context():
        rows = db.session.execute(select(ResponseTime)).scalars().all()
        assert len(rows) == 2
        assert {(r.instance_id, r.location) for r in rows} == {(DEPENDENT_ID, "eu-west")}
        instance = db.session.get(MonitoringInstance, DEPENDENT_ID)
        assert instance.system_info["cpuPercent"] == 3.5
        assert instance.connection_info["primaryReachable"] is True
        status = db.session.get(LocationStatus, (endpoint_id, DEPENDENT_ID))
        assert status is not None and status.status in {"UP", "DOWN"}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (heartbeat(results="many"), "results"),
        (heartbeat([result(1, isOk="perhaps")]), "results.0.isOk"),
        (heartbeat([result(1, status="SIDEWAYS")]), "results.0.status"),
        (heartbeat([result(1, checkedAt="yesterday")]), "results.0.checkedAt"),
        (heartbeat([result(1, checkedAt="2026-01-01T00:00:00")]), "results.0.checkedAt"),
        (heartbeat([result(1, resultId="not-a-uuid")]), "results.0.resultId"),
        (heartbeat([result(1, responseTime=-1)]), "results.0.responseTime"),
        (heartbeat(epoch="late"), "epoch"),
        (heartbeat(surprise=1), "surprise"),
    ],
)
def test_it_rejects_malformed_heartbeats_and_changes_nothing(primary_app, sync, token, endpoint_id, payload, field):
    with primary_app.app_context():
        before = db.session.get(MonitoringInstance, DEPENDENT_ID).system_info
    reply = sync.put("/sync/api/heartbeat", json=payload, headers=bearer(token))
    assert reply.status_code == 400
    assert field in reply.get_json()["fields"], reply.get_json()
    assert count(primary_app, ResponseTime) == 0
    with primary_app.app_context():
        assert db.session.get(MonitoringInstance, DEPENDENT_ID).system_info == before


def test_it_rejects_bodies_that_are_not_json_objects(primary_app, sync, token):
    for data in ("{not json", "[1, 2]", ""):
        reply = sync.put("/sync/api/heartbeat", data=data, content_type="application/json", headers=bearer(token))
        assert reply.status_code == 400 and reply.get_json()["error"] == "invalid_json"


def test_it_refuses_an_oversized_heartbeat(primary_app, sync, token, endpoint_id):
    payload = heartbeat([result(endpoint_id, failureReason="x" * 1500) for _ in range(1000)])
    reply = sync.put("/sync/api/heartbeat", json=payload, headers=bearer(token))
    assert reply.status_code == 413
    assert count(primary_app, ResponseTime) == 0


def test_it_refuses_too_many_results_in_one_heartbeat(primary_app, sync, token, endpoint_id):
    payload = heartbeat([result(endpoint_id, metadata={}) for _ in range(1001)])
    reply = sync.put("/sync/api/heartbeat", json=payload, headers=bearer(token))
    assert reply.status_code in {400, 413}
    assert count(primary_app, ResponseTime) == 0


def test_it_refuses_a_heartbeat_for_another_instance(primary_app, sync, token, endpoint_id):
    reply = sync.put("/sync/api/heartbeat", json=heartbeat([result(endpoint_id)], instanceId="someone-else-1"),
                     headers=bearer(token))
    assert reply.status_code == 403
    assert count(primary_app, ResponseTime) == 0


def test_it_serves_the_configuration_with_a_version_etag(primary_app, sync, token, endpoint_id):
    first = sync.get("/sync/api/endpoints", headers=bearer(token))
    assert first.status_code == 200
    config = first.get_json()
    assert [e["id"] for e in config["endpoints"]] == [endpoint_id]
    assert "status" not in config["endpoints"][0]
    etag = first.headers["ETag"]
    assert etag == f'"{config["configVersion"]}"'
    unchanged = sync.get("/sync/api/endpoints", headers={**bearer(token), "If-None-Match": etag})
    assert unchanged.status_code == 304
    with primary_app.app_context():
        create_endpoint({"name": "db", "checkType": "tcp", "target": "127.0.0.1", "port": 5432})
    changed = sync.get("/sync/api/endpoints", headers={**bearer(token), "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.get_json()["configVersion"] == config["configVersion"] + 1
    one = sync.get(f"/sync/api/endpoints/{endpoint_id}", headers=bearer(token))
    assert one.get_json()["name"] == "web"
    assert sync.get("/sync/api/endpoints/999", headers=bearer(token)).status_code == 404


def test_it_renews_a_token_that_is_close_to_expiry(primary_app, sync):
    from app.services.sync import tokens

    sync.post("/sync/api/register", json=registration(), headers={"X-Cluster-Secret": SECRET})
    with primary_app.app_context():
        short, _ = tokens.issue(DEPENDENT_ID, ttl=600)  # far less than a third of a day left
        db.session.commit()
    reply = sync.put("/sync/api/heartbeat", json=heartbeat(), headers=bearer(short)).get_json()
    assert reply["token"] != short
    assert sync.get("/sync/api/instances", headers=bearer(reply["token"])).status_code == 200


def test_it_refuses_requests_from_an_older_epoch(primary_app, sync, token):
    with primary_app.app_context():
        configuration.set_role("primary", new_epoch=3, new_primary_url=None)
        db.session.commit()
    reply = sync.get("/sync/api/instances", headers={**bearer(token), "X-Cluster-Epoch": "2"})
    assert reply.status_code == 409
    assert reply.get_json()["error"] == "stale_epoch" and reply.get_json()["epoch"] == 3
    assert reply.headers["X-Cluster-Epoch"] == "3"
    current = sync.get("/sync/api/instances", headers={**bearer(token), "X-Cluster-Epoch": "3"})
    assert current.status_code == 200


def test_deleting_an_instance_revokes_its_token_at_once(primary_app, sync, token):
    assert sync.get("/sync/api/instances", headers=bearer(token)).status_code == 200
    assert sync.delete("/sync/api/instances/someone-else", headers=bearer(token)).status_code == 403
    assert sync.delete(f"/sync/api/instances/{DEPENDENT_ID}", headers=bearer(token)).status_code == 204
    assert sync.get("/sync/api/instances", headers=bearer(token)).status_code == 401
    assert count(primary_app, MonitoringInstance) == 0


def test_a_non_primary_answers_only_peer_routes(tmp_path, migrated_sqlite_template):
    from tests.conftest import instance_app

    standalone = instance_app(tmp_path, migrated_sqlite_template, {}, serve="sync").test_client()
    assert standalone.get("/sync/api/health").get_json()["role"] == "standalone"
    assert standalone.get("/sync/api/status").status_code == 200
    reply = standalone.post("/sync/api/register", json=registration(), headers={"X-Cluster-Secret": SECRET})
    assert reply.status_code == 409 and reply.get_json()["error"] == "not_primary"


def test_it_lists_instances_and_the_failover_order(primary_app, sync, token):
    from workers import jobs
    from workers.jobs.sync import primary_housekeeping

    jobs._app = primary_app
    try:
        primary_housekeeping()
    finally:
        jobs._app = None
    listed = sync.get("/sync/api/instances", headers=bearer(token)).get_json()["instances"]
    assert {i["role"] for i in listed} == {"primary", "dependent"}
    order = sync.get("/sync/api/failover-order", headers=bearer(token)).get_json()["failoverOrder"]
    assert [o["failoverOrder"] for o in order] == sorted(o["failoverOrder"] for o in order)
    assert sync.get("/sync/api/notification-services", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize("checked_at", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00",
                                        "1999-12-31T23:59:59+00:00", "2999-01-01T00:00:00+00:00"])
def test_it_refuses_implausible_result_times(primary_app, sync, token, endpoint_id, checked_at):
    reply = sync.put("/sync/api/heartbeat", json=heartbeat([result(endpoint_id, checkedAt=checked_at)]),
                     headers=bearer(token))
    assert reply.status_code == 400
    assert "results.0.checkedAt" in reply.get_json()["fields"]
    assert count(primary_app, ResponseTime) == 0


def test_it_refuses_out_of_range_integers(primary_app, sync, token):
    reply = sync.put("/sync/api/heartbeat", json=heartbeat([result(10**20)], configVersion=10**20),
                     headers=bearer(token))
    assert reply.status_code == 400
    assert {"configVersion", "results.0.endpointId"} <= set(reply.get_json()["fields"])


def test_the_join_secret_alone_cannot_take_over_a_live_instance_s_id(primary_app, sync, token):
    """Every dependent knows the secret and can list the ids: re-registering
    an id takes that instance's token (expired will do) or its silence."""
    from app.services.sync import tokens

    hijack = sync.post("/sync/api/register", json=registration(instanceName="rogue", location="elsewhere"),
                       headers={"X-Cluster-Secret": SECRET})
    assert hijack.status_code == 409 and hijack.get_json()["fields"] == {"instanceId": "in use by a live instance"}
    assert sync.get("/sync/api/instances", headers=bearer(token)).status_code == 200
    with primary_app.app_context():
        instance = db.session.get(MonitoringInstance, DEPENDENT_ID)
        assert (instance.name, instance.location) == ("dep-1", "eu-west")
        expired, _ = tokens.issue(DEPENDENT_ID, ttl=-60)
        db.session.commit()

    again = sync.post("/sync/api/register", json=registration(), headers={
        "X-Cluster-Secret": SECRET, "Authorization": f"Bearer {expired}"})
    assert again.status_code == 201  # its own (expired) token proves who it is
    assert sync.get("/sync/api/instances", headers=bearer(token)).status_code == 401  # the older one is revoked

    with primary_app.app_context():
        db.session.get(MonitoringInstance, DEPENDENT_ID).last_heartbeat_at = utcnow() - timedelta(minutes=5)
        db.session.commit()
    silent = sync.post("/sync/api/register", json=registration(), headers={"X-Cluster-Secret": SECRET})
    assert silent.status_code == 201  # silent for 3 heartbeats: its tokens may no longer verify


def test_a_dependent_cannot_set_the_primary_s_own_connection_facts(primary_app, sync, token, endpoint_id):
    from app.services.sync import primary

    body = heartbeat()
    body["connectionStatus"] = {"primaryReachable": True, "heartbeatInterval": "x", "remoteAddr": "10.9.9.9",
                                "anythingElse": "y" * 1000}
    body["systemInfo"] = {"cpuPercent": 1.0, "injected": "z" * 1000}
    assert sync.put("/sync/api/heartbeat", json=body, headers=bearer(token)).status_code == 200
    with primary_app.app_context():
        instance = db.session.get(MonitoringInstance, DEPENDENT_ID)
        assert instance.connection_info["heartbeatInterval"] == 5
        assert instance.connection_info["remoteAddr"] != "10.9.9.9"
        assert "anythingElse" not in instance.connection_info and "injected" not in instance.system_info
        primary.mark_silent_instances()  # does not trip over anything a dependent sent


def test_it_refuses_results_from_the_future(primary_app, sync, token, endpoint_id):
    ahead = result(endpoint_id, checkedAt=(utcnow() + timedelta(minutes=30)).isoformat())
    reply = sync.put("/sync/api/heartbeat", json=heartbeat([ahead]), headers=bearer(token))
    assert reply.status_code == 400 and "results.0.checkedAt" in reply.get_json()["fields"]
    skewed = result(endpoint_id, checkedAt=(utcnow() + timedelta(minutes=2)).isoformat())
    assert sync.put("/sync/api/heartbeat", json=heartbeat([skewed]), headers=bearer(token)).status_code == 200


def test_a_dependent_that_keeps_its_old_token_is_renewed_once_not_every_heartbeat(primary_app, sync):
    from app.services.sync import tokens

    sync.post("/sync/api/register", json=registration(), headers={"X-Cluster-Secret": SECRET})
    with primary_app.app_context():
        short, _ = tokens.issue(DEPENDENT_ID, ttl=600)
        db.session.commit()
    replies = [sync.put("/sync/api/heartbeat", json=heartbeat(), headers=bearer(short)).get_json()
               for _ in range(3)]
    assert "token" in replies[0] and "token" not in replies[1] and "token" not in replies[2]
    with primary_app.app_context():
        assert db.session.execute(select(func.count(InstanceToken.id))).scalar_one() == 3  # register, short, renewal


def test_housekeeping_deletes_tokens_that_can_never_verify_again(primary_app, sync, token, monkeypatch):
    from app.services.sync import tokens
    from workers import jobs
    from workers.jobs.sync import primary_housekeeping

    with primary_app.app_context():
        tokens.issue(DEPENDENT_ID, ttl=-2 * 86400)  # expired two days ago
        old, _ = tokens.issue(DEPENDENT_ID)
        db.session.flush()
        db.session.execute(db.update(InstanceToken).where(InstanceToken.token_hash == tokens.token_hash(old))
                           .values(revoked_at=utcnow() - timedelta(days=2)))
        db.session.commit()
    monkeypatch.setattr(jobs, "_app", primary_app)
    assert primary_housekeeping()["tokensPruned"] == 2
    with primary_app.app_context():
        assert db.session.execute(select(func.count(InstanceToken.id))).scalar_one() == 1
    assert sync.get("/sync/api/instances", headers=bearer(token)).status_code == 200
