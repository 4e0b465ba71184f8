"""Consensus on a primary: its own results and two dependents' heartbeats,
through the real sync API, on a real SQLite database (and PostgreSQL where
it is set). Alerts are counted as delivery rows."""
from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.checks import CheckResult
from app.extensions import db
from app.models import (
    AggregatedResult,
    Endpoint,
    LocationStatus,
    NotificationDelivery,
    ProbeState,
    ResponseTime,
    StatusChange,
    utcnow,
)
from app.services import configuration, consensus
from app.services.endpoints import create_endpoint
from app.services.notifications import create_service
from app.services.results import record_results
from tests.conftest import SECRET, instance_app, make_app

DEPENDENTS = {"virginia": "5f0c2a6e-0d7a-4c47-9d54-6a1f3a0b7c11", "singapore": "7d1e3b7f-1e8b-4d58-8e65-7b2f4b1c8d22"}


@pytest.fixture
def primary(tmp_path, migrated_sqlite_template):
    application = instance_app(tmp_path, migrated_sqlite_template,
                               {"ENABLE_SYNC_API": "true", "SYNC_SHARED_SECRET": SECRET,
                                "INSTANCE_LOCATION": "frankfurt", "HEARTBEAT_INTERVAL": "5"}, serve="sync")
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


class Cluster:
    """The primary's app with two registered dependents."""

    def __init__(self, app):
        self.app = app
        self.client = app.test_client()
        self.tokens = {}
        for location, instance_id in DEPENDENTS.items():
            reply = self.client.post("/sync/api/register", headers={"X-Cluster-Secret": SECRET}, json={
                "instanceId": instance_id, "instanceName": f"dep-{location}", "location": location,
                "syncUrl": "http://127.0.0.1:4002", "failoverOrder": 1, "heartbeatInterval": 5})
            assert reply.status_code == 201, reply.get_json()
            self.tokens[location] = reply.get_json()["token"]
        with app.app_context():
            self.service = create_service({"name": "ops", "kind": "webhook",
                                           "config": {"url": "http://127.0.0.1:9/hook"}, "isDefault": True}).id

    def endpoint(self, **fields) -> int:
        with self.app.app_context():
            return create_endpoint({"name": "api", "checkType": "http", "target": "http://127.0.0.1:9/",
                                    "intervalSeconds": 30, "timeoutSeconds": 5, **fields}).id

    def own(self, endpoint_id, ok, *, at=None, reason="HTTP 502"):
        """A result of the primary's own check, stored and alerted as the check job does."""
        from workers.jobs.alerts import alert_transitions

        with self.app.app_context():
            own_id, location = configuration.instance_identity()
            transitions = record_results([(endpoint_id, CheckResult(
                is_ok=ok, check_type="http", response_time_ms=10.0 if ok else None,
                failure_reason=None if ok else reason, checked_at=at or utcnow()))],
                instance_id=own_id, location=location)
            alert_transitions(transitions)  # no Redis here: deliveries are stored, not enqueued
            return transitions

    def beat(self, location, outcomes, *, at=None, results=None):
        """A heartbeat from ``location`` with one result per (endpoint, ok)."""
        at = at or utcnow()
        batch = results if results is not None else [
            {"resultId": str(uuid.uuid4()), "endpointId": endpoint_id, "isOk": ok,
             "responseTime": 20.0 if ok else None, "status": "UP" if ok else "DOWN",
             "failureReason": None if ok else "timeout", "checkType": "http", "metadata": {},
             "checkedAt": at.isoformat()}
            for endpoint_id, ok in outcomes]
        reply = self.client.put("/sync/api/heartbeat", headers={"Authorization": f"Bearer {self.tokens[location]}"},
                                json={"instanceId": DEPENDENTS[location], "epoch": 0, "configVersion": 1,
                                      "results": batch})
        assert reply.status_code == 200, reply.get_json()
        return batch

    def status(self, endpoint_id) -> str:
        with self.app.app_context():
            return db.session.get(Endpoint, endpoint_id).status

    def alerts(self) -> list[tuple[int, str]]:
        with self.app.app_context():
            return [(d.endpoint_id, d.event) for d in db.session.execute(
                select(NotificationDelivery).order_by(NotificationDelivery.id)).scalars()]


@pytest.fixture
def cluster(primary):
    return Cluster(primary)


def test_one_location_down_is_partial_and_pages_nobody(cluster):
    endpoint = cluster.endpoint()
    cluster.own(endpoint, True)
    cluster.beat("virginia", [(endpoint, True)])
    cluster.beat("singapore", [(endpoint, False)])
    assert cluster.status(endpoint) == "PARTIAL"
    with cluster.app.app_context():
        row = db.session.get(Endpoint, endpoint)
        assert (row.locations_voting, row.locations_up, row.locations_down) == (3, 2, 1)
        assert row.last_failure_reason == "DOWN from 1 of 3 locations: singapore (timeout); frankfurt, virginia UP"
    assert cluster.alerts() == []


def test_a_majority_down_pages_once_and_recovery_once(cluster):
    endpoint = cluster.endpoint()
    cluster.own(endpoint, True)
    cluster.beat("virginia", [(endpoint, True)])
    cluster.own(endpoint, False)
    cluster.beat("virginia", [(endpoint, False)])
    assert cluster.status(endpoint) == "DOWN"
    cluster.beat("singapore", [(endpoint, False)])  # a third location agreeing changes nothing
    assert cluster.alerts() == [(endpoint, "down")]
    cluster.beat("virginia", [(endpoint, True)])
    cluster.own(endpoint, True)                      # 1 of 3 down: PARTIAL, the same incident
    assert cluster.status(endpoint) == "PARTIAL"
    cluster.own(endpoint, False)                     # DOWN again: not a second page
    assert cluster.alerts() == [(endpoint, "down")]
    cluster.beat("singapore", [(endpoint, True)])
    cluster.own(endpoint, True)
    assert cluster.status(endpoint) == "UP"
    assert cluster.alerts() == [(endpoint, "down"), (endpoint, "up")]
    with cluster.app.app_context():
        down = db.session.execute(select(NotificationDelivery).where(NotificationDelivery.event == "down")).scalar_one()
        assert down.payload["reason"].startswith("DOWN from 2 of 2 locations: frankfurt (HTTP 502), virginia (timeout)")
        changes = db.session.execute(select(AggregatedResult).where(AggregatedResult.is_change.is_(True))
                                     .order_by(AggregatedResult.id)).scalars().all()
        assert [c.consensus for c in changes] == ["UP", "PARTIAL", "DOWN", "PARTIAL", "DOWN", "PARTIAL", "UP"]
        assert changes[-1].locations_total == 3


def test_partial_alerts_when_the_endpoint_asks_for_them(cluster):
    endpoint = cluster.endpoint(alertOnPartial=True)
    cluster.own(endpoint, True)
    cluster.beat("virginia", [(endpoint, True)])
    cluster.beat("singapore", [(endpoint, False)])
    cluster.beat("singapore", [(endpoint, True)])
    assert cluster.alerts() == [(endpoint, "partial"), (endpoint, "up")]


def test_at_least_one_location_pages_for_any_location(cluster):
    endpoint = cluster.endpoint(consensusRule="atLeast:1")
    cluster.own(endpoint, True)
    cluster.beat("virginia", [(endpoint, False)])
    assert cluster.status(endpoint) == "DOWN"
    assert cluster.alerts() == [(endpoint, "down")]


def test_a_replayed_heartbeat_moves_nothing_and_pages_nobody_twice(cluster):
    endpoint = cluster.endpoint()
    cluster.own(endpoint, False)
    batch = cluster.beat("virginia", [(endpoint, False)])
    assert cluster.alerts() == [(endpoint, "down")]
    with cluster.app.app_context():
        before = db.session.get(LocationStatus, (endpoint, DEPENDENTS["virginia"])).consecutive_failures
    cluster.beat("virginia", [], results=batch)  # the same results again (a reply lost)
    with cluster.app.app_context():
        state = db.session.get(LocationStatus, (endpoint, DEPENDENTS["virginia"]))
        assert state.consecutive_failures == before == 1
        assert db.session.execute(select(func.count()).select_from(StatusChange)).scalar_one() == 1
    assert cluster.alerts() == [(endpoint, "down")]


def test_an_older_result_does_not_move_a_location_back(cluster):
    endpoint = cluster.endpoint()
    cluster.beat("virginia", [(endpoint, True)], at=utcnow())
    cluster.beat("virginia", [(endpoint, False)], at=utcnow() - timedelta(seconds=20))
    with cluster.app.app_context():
        state = db.session.get(LocationStatus, (endpoint, DEPENDENTS["virginia"]))
        assert (state.status, state.last_is_ok) == ("UP", True)
        # Stored all the same: it is history.
        assert db.session.execute(select(func.count()).select_from(ResponseTime)
                                  .where(ResponseTime.endpoint_id == endpoint)).scalar_one() == 2


def test_results_delivered_after_a_silence_are_history_not_votes(cluster):
    endpoint = cluster.endpoint()
    cluster.own(endpoint, True)
    cluster.beat("virginia", [(endpoint, True)])
    with cluster.app.app_context():
        # Virginia went silent two minutes ago (its link was cut).
        from app.models import MonitoringInstance

        db.session.get(MonitoringInstance, DEPENDENTS["virginia"]).last_heartbeat_at = utcnow() - timedelta(minutes=2)
        db.session.commit()
    outage = [{"resultId": str(uuid.uuid4()), "endpointId": endpoint, "isOk": False, "responseTime": None,
               "status": "DOWN", "failureReason": "no route", "checkType": "http", "metadata": {},
               "checkedAt": (utcnow() - timedelta(seconds=s)).isoformat()} for s in (90, 60, 30, 1)]
    cluster.beat("virginia", [], results=outage)
    with cluster.app.app_context():
        state = db.session.get(LocationStatus, (endpoint, DEPENDENTS["virginia"]))
        assert (state.status, state.last_is_ok) == ("UP", True)
        assert db.session.execute(select(func.count()).select_from(ResponseTime)
                                  .where(ResponseTime.location == "virginia")).scalar_one() == 5
    cluster.own(endpoint, True)
    assert cluster.status(endpoint) == "UP" and cluster.alerts() == []
    cluster.beat("virginia", [(endpoint, False)])  # checked after it came back: a vote again
    with cluster.app.app_context():
        assert db.session.get(LocationStatus, (endpoint, DEPENDENTS["virginia"])).status == "DOWN"


def test_a_location_that_sees_everything_down_is_probe_offline(cluster):
    endpoints = [cluster.endpoint(name=f"e{n}") for n in range(4)]
    for endpoint in endpoints:
        cluster.own(endpoint, True)
        cluster.beat("virginia", [(endpoint, True)])
    cluster.beat("singapore", [(endpoint, False) for endpoint in endpoints])
    with cluster.app.app_context():
        probe = db.session.get(ProbeState, DEPENDENTS["singapore"])
        assert probe is not None and probe.offline_since is not None
        assert "sees 4 of its 4 endpoints DOWN" in probe.offline_reason
        views = consensus.locations_of(db.session.execute(select(Endpoint)).scalars().all())
        assert all(any(v.location == "singapore" and v.probe_offline for v in rows) for rows in views.values())
    assert {cluster.status(endpoint) for endpoint in endpoints} == {"UP"}
    assert cluster.alerts() == []
    cluster.beat("singapore", [(endpoint, True) for endpoint in endpoints])
    with cluster.app.app_context():
        assert db.session.get(ProbeState, DEPENDENTS["singapore"]).offline_since is None


def test_a_stale_location_stops_voting_on_the_next_pass(cluster):
    endpoint = cluster.endpoint()
    cluster.own(endpoint, True)
    cluster.beat("virginia", [(endpoint, False)])
    assert cluster.status(endpoint) == "PARTIAL"
    with cluster.app.app_context():
        # A minute and a half later virginia has said nothing: 2 x 30 s + 5 s heartbeat + 5 s timeout + 5 s grace.
        own_id = configuration.instance_id()
        db.session.get(LocationStatus, (endpoint, own_id)).last_checked_at = utcnow() + timedelta(seconds=80)
        db.session.commit()
        summary = consensus.reevaluate(now=utcnow() + timedelta(seconds=90))
        assert summary["settled"] == 1
        assert db.session.get(Endpoint, endpoint).status == "UP"


def test_consensus_uptime_is_weighted_by_time(cluster):
    endpoint = cluster.endpoint()
    now = utcnow()
    with cluster.app.app_context():
        for minutes_ago, status in ((120, "UP"), (60, "DOWN"), (30, "UP")):
            db.session.add(AggregatedResult(endpoint_id=endpoint, computed_at=now - timedelta(minutes=minutes_ago),
                                            consensus=status, is_change=True, details={}))
        db.session.commit()
        uptime = consensus.uptimes([endpoint], now, spans=(timedelta(hours=2), timedelta(minutes=45)))[endpoint]
        assert uptime[timedelta(hours=2)] == pytest.approx(75.0)
        assert uptime[timedelta(minutes=45)] == pytest.approx(100.0 * 30 / 45)


def test_only_the_assigned_locations_vote(cluster):
    endpoint = cluster.endpoint(locations=[DEPENDENTS["virginia"]])
    with cluster.app.app_context():
        assert db.session.get(Endpoint, endpoint).checked_here is False
    cluster.beat("singapore", [(endpoint, False)])
    cluster.beat("virginia", [(endpoint, True)])
    assert cluster.status(endpoint) == "UP"
    reply = cluster.client.get("/sync/api/endpoints", headers={"Authorization": f"Bearer {cluster.tokens['virginia']}"})
    assert endpoint in [e["id"] for e in reply.get_json()["endpoints"]]


def _flip_in_thread(app, endpoint_id, instance_id, location, barrier, outcomes):
    with app.app_context():
        try:
            row = {"result_id": str(uuid.uuid4()), "endpoint_id": endpoint_id, "instance_id": instance_id,
                   "location": location, "checked_at": utcnow(), "is_ok": False, "status": "DOWN",
                   "response_time_ms": None, "failure_reason": "refused", "check_type": "tcp",
                   "check_metadata": {}, "synced_at": utcnow()}
            from app.services.results import store_results

            store_results([row])
            barrier.wait(30)
            outcomes.append(consensus.ingest([row], instance_id=instance_id, location=location, own=False))
            db.session.commit()
        except Exception as exc:  # the assertion names it
            db.session.rollback()
            outcomes.append(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_voting_at_once_raise_one_alert(backend, request, tmp_path):
    """Two locations' results stored by two processes at the same moment
    both make the endpoint DOWN: one status change, one delivery."""
    from app.services import alerts

    if backend == "sqlite":
        first = request.getfixturevalue("app")
        second = make_app(tmp_path)
        barrier = threading.Barrier(1)  # one writer at a time
    else:
        first = request.getfixturevalue("pg_app")
        second = make_app(tmp_path / "second", {"DATABASE_URL": request.getfixturevalue("postgres_url")})
        barrier = threading.Barrier(2, timeout=30)
    with first.app_context():
        configuration.ensure_initialized()
        service = create_service({"name": "ops", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/"},
                                  "isDefault": True}).id
        endpoint_id = create_endpoint({"name": "db", "checkType": "tcp", "target": "127.0.0.1", "port": 5432}).id
    outcomes = []
    threads = [threading.Thread(target=_flip_in_thread, args=(application, endpoint_id, instance_id, location,
                                                               barrier, outcomes))
               for application, instance_id, location in ((first, "instance-aaaa", "a"),
                                                          (second, "instance-bbbb", "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(isinstance(o, list) for o in outcomes) and len(outcomes) == 2, outcomes
    assert sum(len(o) for o in outcomes) == 1  # one of them saw the change
    # Both raise alerts for what they saw, and the sweep again: still one delivery.
    for application in (first, second):
        with application.app_context():
            alerts.raise_alerts({endpoint_id})
    with first.app_context():
        assert db.session.execute(select(func.count()).select_from(StatusChange)).scalar_one() == 1
        deliveries = db.session.execute(select(NotificationDelivery)).scalars().all()
        assert [(d.notification_service_id, d.event) for d in deliveries] == [(service, "down")]
    with second.app_context():
        db.engine.dispose()


def test_certificate_expiry_alerts_once_and_once_more_when_renewed(cluster):
    from app.services import alerts

    endpoint = cluster.endpoint(target="https://127.0.0.1:9/", certExpiryDays=14)

    def result_with_certificate(days):
        valid_to = (utcnow() + timedelta(days=days, hours=1)).isoformat()
        with cluster.app.app_context():
            own_id, location = configuration.instance_identity()
            record_results([(endpoint, CheckResult(
                is_ok=True, check_type="http", response_time_ms=5.0,
                metadata={"certificateInfo": {"validTo": valid_to, "daysRemaining": days}}))],
                instance_id=own_id, location=location)

    def raise_them():
        with cluster.app.app_context():
            alerts.raise_certificate_alerts()

    result_with_certificate(5)
    raise_them()
    raise_them()
    assert cluster.alerts() == [(endpoint, "cert_expiring")]
    with cluster.app.app_context():
        payload = db.session.execute(select(NotificationDelivery.payload)).scalar_one()
        assert payload["certificate"]["daysLeft"] == 5
        assert "expires in 5 days" in payload["title"]
    result_with_certificate(90)
    raise_them()
    raise_them()
    assert cluster.alerts() == [(endpoint, "cert_expiring"), (endpoint, "cert_renewed")]


def test_a_result_that_waited_in_an_outbox_is_history_even_without_a_silence(cluster):
    endpoint = cluster.endpoint()
    cluster.own(endpoint, True)
    cluster.beat("virginia", [(endpoint, True)], at=utcnow() - timedelta(seconds=1))
    # Two minutes old on arrival: 3 heartbeats (15 s) + the 5 s timeout + 5 s grace is the limit.
    cluster.beat("virginia", [(endpoint, False)], at=utcnow() - timedelta(minutes=2))
    cluster.beat("singapore", [(endpoint, False)], at=utcnow() - timedelta(minutes=2))
    with cluster.app.app_context():
        assert db.session.get(LocationStatus, (endpoint, DEPENDENTS["virginia"])).status == "UP"
        assert db.session.get(LocationStatus, (endpoint, DEPENDENTS["singapore"])) is None
    assert cluster.status(endpoint) == "UP" and cluster.alerts() == []


def test_the_first_location_to_report_does_not_decide_alone(cluster):
    endpoint = cluster.endpoint(consensusRule="atLeast:1")
    cluster.beat("singapore", [(endpoint, False)])
    assert cluster.status(endpoint) == "PENDING" and cluster.alerts() == []
    cluster.own(endpoint, True)
    cluster.beat("virginia", [(endpoint, True)])
    assert cluster.status(endpoint) == "DOWN"  # every location has voted: atLeast:1 holds
    with cluster.app.app_context():
        other = create_endpoint({"name": "late", "checkType": "http", "target": "http://127.0.0.1:9/",
                                 "intervalSeconds": 30, "timeoutSeconds": 5}).id
    cluster.beat("singapore", [(other, False)])
    with cluster.app.app_context():
        # Once a freshness window has passed since it was made, the voters there decide.
        later = utcnow() + timedelta(seconds=30)
        db.session.get(LocationStatus, (other, DEPENDENTS["singapore"])).last_checked_at = later
        db.session.commit()
        consensus.reevaluate(now=later + timedelta(seconds=45))
        assert db.session.get(Endpoint, other).status == "DOWN"


def test_a_failing_connectivity_target_takes_this_location_out_of_the_vote(tmp_path, migrated_sqlite_template,
                                                                             monkeypatch):
    """CONNECTIVITY_CHECK_TARGET, checked for real against a TCP listener on
    loopback: while it refuses, this instance's location does not vote."""
    import socket

    from workers import jobs
    from workers.jobs.consensus import check_connectivity

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    application = instance_app(tmp_path, migrated_sqlite_template,
                               {"CONNECTIVITY_CHECK_TARGET": f"127.0.0.1:{port}"}, serve="none")
    monkeypatch.setattr(jobs, "_app", application)
    try:
        assert check_connectivity() == {"ok": True}
        listener.close()  # nothing listens there now: connection refused
        outcome = check_connectivity()
        assert outcome["ok"] is False and f"127.0.0.1:{port}" in outcome["error"]
        with application.app_context():
            own_id, location = configuration.instance_identity()
            endpoint = create_endpoint({"name": "e", "checkType": "tcp", "target": "127.0.0.1", "port": 9}).id
            record_results([(endpoint, CheckResult(is_ok=False, check_type="tcp", failure_reason="refused"))],
                           instance_id=own_id, location=location)
            probe = db.session.get(ProbeState, own_id)
            assert probe.offline_since is not None and "connectivity check failed" in probe.offline_reason
            # Its DOWN result does not count: a standalone with no voter stays as it was.
            assert db.session.get(Endpoint, endpoint).status == "PENDING"
    finally:
        listener.close()
        with application.app_context():
            db.engine.dispose()


@pytest.mark.parametrize("value", ["nohost", "host:", ":80", "host:0", "host:70000", "ho st:80"])
def test_a_bad_connectivity_target_is_refused_naming_the_variable(value):
    from app.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="CONNECTIVITY_CHECK_TARGET"):
        load_settings({"CONNECTIVITY_CHECK_TARGET": value})
