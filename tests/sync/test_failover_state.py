"""Cluster state for failover, on real SQLite and PostgreSQL databases and
through the real sync API: compare-and-set transitions, one vote per epoch,
the peer routes and their refusals, stepping down on a newer epoch, relayed
results, catch-up, and alerts that only a primary sends."""
from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import ClusterEvent, InstanceConfig, MonitoringInstance, ResponseTime, utcnow
from app.services import configuration, failover
from app.services.endpoints import create_endpoint
from tests.conftest import SECRET, instance_app, make_app, migrate, reset_postgres

MEMBER_ID = "7d1f6b0e-2a9c-4e11-8d3b-0c5a6e7f8a90"
OTHER_ID = "0a9b8c7d-6e5f-4a3b-9c1d-2e3f4a5b6c7d"
PEER = {"X-Cluster-Secret": SECRET}


@pytest.fixture(params=["sqlite", "postgresql"])
def cluster_app(request, tmp_path, migrated_sqlite_template):
    """A primary's sync API app on SQLite or PostgreSQL (``web_of`` gives
    its web surface on the same database)."""
    env = {"ENABLE_SYNC_API": "true", "SYNC_SHARED_SECRET": SECRET, "INSTANCE_LOCATION": "lab",
           "FAILOVER_CHECK_INTERVAL": "1"}
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        reset_postgres(url)
        application = make_app(tmp_path, {**env, "DATABASE_URL": url}, serve="sync")
        migrate(application)
    else:
        application = instance_app(tmp_path, migrated_sqlite_template, env, serve="sync")
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


def web_of(sync_app):
    from app import create_app

    return create_app({"TESTING": True}, serve="web", settings=sync_app.config["SETTINGS"])


def test_a_transition_happens_once_from_one_reading(cluster_app):
    with cluster_app.app_context():
        seen = configuration.snapshot()
        assert seen.is_primary and seen.epoch == 0
        assert configuration.transition(seen, new_role="dependent", new_epoch=1, primary_id=MEMBER_ID,
                                        primary_url="http://127.0.0.1:9", kind="follow", detail="first")
        # A second process that read the same state changes nothing.
        assert not configuration.transition(seen, new_role="primary", new_epoch=1, primary_id=seen.instance_id,
                                            primary_url=None, kind="promote")
        now = configuration.snapshot()
        assert (now.role, now.epoch, now.primary_id) == ("dependent", 1, MEMBER_ID)
        kinds = [e.kind for e in db.session.execute(select(ClusterEvent)).scalars()]
        assert kinds == ["follow"]
        with pytest.raises(ValueError):
            configuration.transition(now, new_role="primary", new_epoch=0, primary_id=None, primary_url=None,
                                     kind="promote")


def test_two_racing_promotions_of_one_instance_make_one_primary(cluster_app):
    with cluster_app.app_context():
        configuration.set_role("dependent", new_epoch=4, new_primary_url="http://127.0.0.1:9")
        db.session.commit()
        seen = configuration.snapshot()
    outcomes = []
    barrier = threading.Barrier(4)

    def promote():
        with cluster_app.app_context():
            barrier.wait()
            outcomes.append(configuration.transition(seen, new_role="primary", new_epoch=5,
                                                     primary_id=seen.instance_id, primary_url=None, kind="promote"))
            db.session.remove()

    threads = [threading.Thread(target=promote) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == [False, False, False, True]
    with cluster_app.app_context():
        assert configuration.epoch() == 5 and configuration.is_primary()
        assert db.session.execute(select(ClusterEvent).where(ClusterEvent.kind == "promote")).scalars().all()


def test_one_vote_per_epoch_kept_across_restarts(cluster_app, tmp_path):
    with cluster_app.app_context():
        configuration.set_role("dependent", new_epoch=2, new_primary_url="http://127.0.0.1:9")
        db.session.commit()
        assert not configuration.grant_vote(2, MEMBER_ID)  # not newer than our epoch
        assert configuration.grant_vote(3, MEMBER_ID)
        assert configuration.grant_vote(3, MEMBER_ID)  # asked again: the same answer
        assert not configuration.grant_vote(3, OTHER_ID)
        db.session.remove()
    with cluster_app.app_context():  # a fresh session reads the persisted vote
        assert configuration.vote_granted() == (3, MEMBER_ID)
        assert not configuration.grant_vote(3, OTHER_ID)
        assert configuration.grant_vote(4, OTHER_ID)
        votes = db.session.execute(select(ClusterEvent).where(ClusterEvent.kind == "vote")).scalars().all()
        assert len(votes) == 2


def test_vote_route_needs_the_join_secret_and_a_valid_request(cluster_app):
    sync = cluster_app.test_client()
    body = {"candidateId": MEMBER_ID, "epoch": 1, "syncUrl": "http://127.0.0.1:9"}
    assert sync.post("/sync/api/vote", json=body).status_code == 401
    assert sync.post("/sync/api/vote", json=body, headers={"X-Cluster-Secret": "wrong" * 5}).status_code == 401
    bad = sync.post("/sync/api/vote", json={**body, "epoch": "many"}, headers=PEER)
    assert bad.status_code == 400 and "epoch" in bad.get_json()["fields"]
    bad = sync.post("/sync/api/vote", json={**body, "syncUrl": "ftp://x"}, headers=PEER)
    assert bad.status_code == 400 and "syncUrl" in bad.get_json()["fields"]
    # A live primary never votes another into its place.
    answer = sync.post("/sync/api/vote", json=body, headers=PEER).get_json()
    assert answer["granted"] is False and "primary" in answer["reason"]
    with cluster_app.app_context():
        assert configuration.vote_granted() == (0, None)


def test_a_dependent_whose_primary_is_gone_votes_once_per_epoch(cluster_app):
    with cluster_app.app_context():
        # Its primary's address answers nothing (nothing listens on port 9).
        configuration.set_role("dependent", new_epoch=0, new_primary_url="http://127.0.0.1:9")
        db.session.commit()
    sync = cluster_app.test_client()
    first = sync.post("/sync/api/vote", json={"candidateId": MEMBER_ID, "epoch": 1, "syncUrl": "http://127.0.0.1:9"},
                      headers=PEER).get_json()
    assert first["granted"] is True
    second = sync.post("/sync/api/vote", json={"candidateId": OTHER_ID, "epoch": 1, "syncUrl": "http://127.0.0.1:8"},
                       headers=PEER).get_json()
    assert second["granted"] is False and MEMBER_ID in second["reason"]
    later = sync.post("/sync/api/vote", json={"candidateId": OTHER_ID, "epoch": 2, "syncUrl": "http://127.0.0.1:8"},
                      headers=PEER).get_json()
    assert later["granted"] is True


def test_an_announcement_is_followed_only_when_its_sender_is_a_live_primary(cluster_app):
    with cluster_app.app_context():
        configuration.set_role("dependent", new_epoch=0, new_primary_url="http://127.0.0.1:9")
        db.session.commit()
    sync = cluster_app.test_client()
    answer = sync.post("/sync/api/announce", json={"primaryId": MEMBER_ID, "epoch": 7,
                                                  "syncUrl": "http://127.0.0.1:9"}, headers=PEER)
    assert answer.status_code == 200 and answer.get_json()["followed"] is False
    with cluster_app.app_context():
        assert configuration.snapshot().epoch == 0
    assert sync.post("/sync/api/announce", json={"primaryId": MEMBER_ID, "epoch": 7,
                                                "syncUrl": "http://127.0.0.1:9"}).status_code == 401


def _register(sync, instance_id=MEMBER_ID, order=1, token=None):
    headers = {**PEER, **({"Authorization": f"Bearer {token}"} if token else {})}
    reply = sync.post("/sync/api/register", headers=headers, json={
        "instanceId": instance_id, "instanceName": f"member-{instance_id[:4]}", "location": "far",
        "syncUrl": "http://127.0.0.1:9", "failoverOrder": order, "heartbeatInterval": 5})
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()


def _heartbeat(instance_id, results=(), epoch=0):
    return {"instanceId": instance_id, "epoch": epoch, "configVersion": 0, "results": list(results)}


def _result(endpoint_id, **change):
    return {"resultId": str(uuid.uuid4()), "endpointId": endpoint_id, "isOk": True, "responseTime": 3.0,
            "status": "UP", "checkType": "http", "checkedAt": utcnow().isoformat(), **change}


def test_a_primary_that_hears_a_newer_epoch_fences_itself_at_once(cluster_app):
    sync = cluster_app.test_client()
    token = _register(sync)["token"]
    auth = {"Authorization": f"Bearer {token}"}
    # A forged epoch without a token changes nothing.
    assert sync.put("/sync/api/heartbeat", json=_heartbeat(MEMBER_ID), headers={"X-Cluster-Epoch": "9"}
                    ).status_code == 401
    with cluster_app.app_context():
        assert configuration.is_primary()
    reply = sync.put("/sync/api/heartbeat", json=_heartbeat(MEMBER_ID, epoch=3),
                     headers={**auth, "X-Cluster-Epoch": "3"})
    assert reply.status_code == 409 and reply.get_json()["error"] == "not_primary"
    with cluster_app.app_context():
        state = configuration.snapshot()
        assert state.is_fenced and not state.accepts_results and not state.may_alert
        assert state.epoch == 0
    # Fenced, it accepts no heartbeat at all.
    assert sync.put("/sync/api/heartbeat", json=_heartbeat(MEMBER_ID), headers=auth).status_code == 409


def test_relayed_results_keep_their_maker_and_unknown_makers_are_refused(cluster_app):
    with cluster_app.app_context():
        endpoint_id = create_endpoint({"name": "web", "checkType": "http", "target": "http://127.0.0.1:9/"}).id
    sync = cluster_app.test_client()
    token = _register(sync)["token"]
    _register(sync, OTHER_ID)
    relayed, stranger = _result(endpoint_id, instanceId=OTHER_ID), _result(endpoint_id, instanceId=str(uuid.uuid4()))
    reply = sync.put("/sync/api/heartbeat", json=_heartbeat(MEMBER_ID, [relayed, stranger]),
                     headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 200, reply.get_json()
    body = reply.get_json()
    assert body["acknowledged"] == [relayed["resultId"]]
    assert [r["resultId"] for r in body["rejected"]] == [stranger["resultId"]]
    with cluster_app.app_context():
        row = db.session.execute(select(ResponseTime)).scalar_one()
        assert (row.instance_id, row.location) == (OTHER_ID, "far")
        # History only: it did not vote for the member it came from.
        from app.models import LocationStatus

        assert db.session.execute(select(LocationStatus).where(LocationStatus.instance_id == OTHER_ID)).first() is None


def test_registration_tells_the_newest_result_held_from_each_member(cluster_app):
    with cluster_app.app_context():
        endpoint_id = create_endpoint({"name": "web", "checkType": "http", "target": "http://127.0.0.1:9/"}).id
    sync = cluster_app.test_client()
    token = _register(sync)["token"]
    assert _register(sync, OTHER_ID)["holds"] == {}
    made = _result(endpoint_id)
    assert sync.put("/sync/api/heartbeat", json=_heartbeat(MEMBER_ID, [made]),
                    headers={"Authorization": f"Bearer {token}"}).status_code == 200
    holds = _register(sync, "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f")["holds"]
    assert list(holds) == [MEMBER_ID]


def test_the_failover_order_is_the_membership_records_after_the_first_registration(cluster_app):
    from app.services.accounts import create_user

    with cluster_app.app_context():
        create_user("root@example.org", "correct horse battery", is_admin=True)
    sync = cluster_app.test_client()
    token = _register(sync, order=1)["token"]
    web = web_of(cluster_app).test_client()
    admin = ("root@example.org", "correct horse battery")
    bad = web.patch(f"/api/v1/instances/{MEMBER_ID}", json={"failoverOrder": -1}, auth=admin)
    assert bad.status_code == 400 and "failoverOrder" in bad.get_json()["fields"]
    bad = web.patch(f"/api/v1/instances/{MEMBER_ID}", json={"name": "x"}, auth=admin)
    assert bad.status_code == 400 and "name" in bad.get_json()["fields"]
    assert web.patch("/api/v1/instances/nobody-here", json={"failoverOrder": 2}, auth=admin).status_code == 404
    changed = web.patch(f"/api/v1/instances/{MEMBER_ID}", json={"failoverOrder": 7}, auth=admin)
    assert changed.status_code == 200 and changed.get_json()["failoverOrder"] == 7
    _register(sync, order=1, token=token)  # its environment still says 1
    with cluster_app.app_context():
        assert db.session.get(MonitoringInstance, MEMBER_ID).failover_order == 7
    listed = web.get("/api/v1/instances", auth=admin).get_json()
    assert listed["role"] == "primary" and {i["instanceId"] for i in listed["instances"]} == {MEMBER_ID}


def test_promote_and_demote_need_an_administrator(cluster_app):
    from app.services.accounts import create_user

    with cluster_app.app_context():
        create_user("root@example.org", "correct horse battery", is_admin=True)
        create_user("viewer@example.org", "correct horse battery", is_admin=False)
    sync = cluster_app.test_client()
    assert sync.post("/sync/api/promote").status_code == 401
    assert sync.post("/sync/api/promote", auth=("viewer@example.org", "correct horse battery")).status_code == 403
    refused = sync.post("/sync/api/promote", auth=("root@example.org", "correct horse battery"))
    assert refused.status_code == 409 and "already the primary" in refused.get_json()["message"]
    with cluster_app.app_context():
        own = configuration.instance_id()
    other = sync.post(f"/sync/api/demote/{MEMBER_ID}", auth=("root@example.org", "correct horse battery"))
    assert other.status_code == 409
    # No candidate in reach: the primary stays the primary.
    alone = sync.post(f"/sync/api/demote/{own}", auth=("root@example.org", "correct horse battery"))
    assert alone.status_code == 409 and "no candidate" in alone.get_json()["message"]
    with cluster_app.app_context():
        assert configuration.is_primary()


def test_catch_up_queues_again_what_a_new_primary_lacks_behind_fresh_results(cluster_app):
    from app.services.sync import dependent

    with cluster_app.app_context():
        endpoint_id = create_endpoint({"name": "web", "checkType": "http", "target": "http://127.0.0.1:9/"}).id
        own = configuration.instance_id()
        now = utcnow()

        def row(maker, minutes_ago, synced=True):
            return ResponseTime(result_id=str(uuid.uuid4()), endpoint_id=endpoint_id, instance_id=maker,
                                location="x", checked_at=now - timedelta(minutes=minutes_ago), is_ok=True,
                                status="UP", response_time_ms=1.0, check_type="http",
                                synced_at=now if synced else None)

        db.session.add_all([row(own, 30), row(own, 20), row(own, 10), row(OTHER_ID, 15), row(OTHER_ID, 5)])
        db.session.commit()
        holds = {own: (now - timedelta(minutes=25)).isoformat()}
        assert dependent.catch_up(holds, 1) == 4  # own newer than 25 min, and all of OTHER_ID's
        assert dependent.catch_up(holds, 1) == 0  # once per epoch
        db.session.add(row(own, -1, synced=False))  # a fresh result, checked after the catch-up began
        db.session.commit()
        batch = dependent.outbox_batch(limit=3)
        assert batch[0].checked_at == max(r.checked_at for r in batch)  # the fresh one goes first
        assert len(batch) == 3
        assert dependent.outbox_size() == 5
        payload = dependent.heartbeat_payload(batch)
        makers = {r.get("instanceId") for r in payload["results"]}
        assert makers <= {None, OTHER_ID}


def test_only_a_primary_sends_and_only_what_changed_since_its_promotion(cluster_app):
    from app.models import NotificationDelivery, StatusChange
    from app.services import alerts, notifications
    from tests.peers.webhook import WebhookReceiver

    receiver = WebhookReceiver().start()
    try:
        with cluster_app.app_context():
            service = notifications.create_service({"name": "hook", "kind": "webhook",
                                                    "config": {"url": receiver.url()}, "isDefault": True})
            endpoint = create_endpoint({"name": "web", "checkType": "http", "target": "http://127.0.0.1:9/"})
            before = StatusChange(endpoint_id=endpoint.id, from_status="UP", to_status="DOWN",
                                  changed_at=utcnow() - timedelta(minutes=2), alert_event="down")
            db.session.add(before)
            db.session.commit()
            # Promoted a minute ago: the change from before is not its to alert.
            configuration.set_role("dependent", new_epoch=0, new_primary_url="http://127.0.0.1:9")
            db.session.commit()
            seen = configuration.snapshot()
            assert configuration.transition(seen, new_role="primary", new_epoch=1, primary_id=seen.instance_id,
                                            primary_url=None, kind="promote")
            db.session.execute(db.update(InstanceConfig).where(InstanceConfig.key == configuration.ALERTING_SINCE)
                               .values(value=(utcnow() - timedelta(minutes=1)).isoformat()))
            db.session.commit()
            assert alerts.raise_alerts() == []
            after = StatusChange(endpoint_id=endpoint.id, from_status="DOWN", to_status="UP", changed_at=utcnow(),
                                 alert_event="up")
            db.session.add(after)
            db.session.commit()
            due = alerts.raise_alerts()
            assert len(due) == 1
            # Stepped down before the worker sends it: it is not sent.
            seen = configuration.snapshot()
            assert configuration.transition(seen, new_role="dependent", new_epoch=2, primary_id=MEMBER_ID,
                                            primary_url="http://127.0.0.1:9", kind="step_down")
            assert alerts.deliver(due[0]) == "failed"
            delivery = db.session.get(NotificationDelivery, due[0])
            assert "no longer the primary" in delivery.last_error
            assert delivery.notification_service_id == service.id
        assert receiver.payloads == []
    finally:
        receiver.stop()


def test_alerts_raised_before_keys_named_the_instance_are_not_raised_again(cluster_app):
    """Keys now carry the instance id (change ids are local); deliveries an
    older version made for a recent change, or a reminder it sent, count."""
    from app.models import NotificationDelivery, StatusChange
    from app.services import alerts, notifications

    with cluster_app.app_context():
        service = notifications.create_service({"name": "hook", "kind": "webhook",
                                                "config": {"url": "http://127.0.0.1:9/hook"}, "isDefault": True})
        endpoint = create_endpoint({"name": "web", "checkType": "http", "target": "http://127.0.0.1:9/",
                                    "reminderIntervalMinutes": 1})
        endpoint.status = "DOWN"
        change = StatusChange(endpoint_id=endpoint.id, from_status="UP", to_status="DOWN",
                              changed_at=utcnow() - timedelta(seconds=90), alert_event="down")
        db.session.add(change)
        db.session.flush()
        for key, event in ((f"{change.id}:{service.id}", "down"), (f"{change.id}:{service.id}:reminder:1", "reminder")):
            db.session.add(NotificationDelivery(notification_service_id=service.id, endpoint_id=endpoint.id,
                                                status_change_id=change.id, event=event, status="sent",
                                                dedupe_key=key, payload={}, attempts=1))
        db.session.commit()
        assert alerts.raise_alerts() == []
        assert alerts.raise_reminders() == []
        assert db.session.query(NotificationDelivery).count() == 2


def test_a_promoted_candidate_hands_out_ids_past_the_copied_ones(cluster_app):
    """Copied rows keep the primary's ids; after a promotion new rows (on
    PostgreSQL, from sequences that never saw the copies) must not collide."""
    from app.models import Endpoint
    from app.services.sync import dependent

    with cluster_app.app_context():
        configuration.set_role("dependent", new_epoch=0, new_primary_url="http://127.0.0.1:9")
        db.session.commit()
        dependent.apply_configuration({"configVersion": 5, "endpoints": [
            {"id": endpoint_id, "name": f"copied {endpoint_id}", "checkType": "tcp", "target": "127.0.0.1",
             "port": 9} for endpoint_id in (3, 7)]})
        db.session.add(ResponseTime(result_id=str(uuid.uuid4()), endpoint_id=7, instance_id=configuration.instance_id(),
                                    location="lab", checked_at=utcnow(), is_ok=True, status="UP",
                                    response_time_ms=1.0, check_type="tcp", synced_at=None))
        db.session.commit()
        assert failover.promote(configuration.snapshot(), 1, reason="test")
        state = configuration.snapshot()
        assert state.is_primary and state.epoch == 1 and state.primary_id == state.instance_id
        # Its own results waiting for the old primary are home now.
        assert db.session.execute(select(ResponseTime).where(ResponseTime.synced_at.is_(None))).first() is None
        created = create_endpoint({"name": "made after", "checkType": "tcp", "target": "127.0.0.1", "port": 9})
        assert created.id > 7
        assert db.session.get(Endpoint, 3).name == "copied 3"
        assert [e.kind for e in configuration.cluster_events()] == ["promote"]
        # A second promotion from the same reading changes nothing.
        configuration.set_role("dependent", new_epoch=1, new_primary_url="http://127.0.0.1:9")
        db.session.commit()
        stale = configuration.snapshot()
        assert failover.promote(stale, 2)
        assert not failover.promote(stale, 2)
