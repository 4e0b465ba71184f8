"""Consensus of three locations, as real process trees: a primary
(frankfurt) and a dependent (virginia) on this host, and a dependent
(singapore) inside a network namespace of the test's own, joined to the
host by a veth pair.

A real HTTP server on the host's end of the pair serves four paths to all
three. The tests run in order against one cluster:

1. /a fails for singapore only: PARTIAL, which pages nobody.
2. /a fails for everyone: DOWN, paged once; healthy again: UP, paged once.
3. singapore is cut off for 60 s: it goes stale and stops voting, its
   failing checks wait in its outbox; once the link is back the outbox
   reaches the primary whole and once, as history: no vote, no change of
   consensus, no alert.

Needs root and ``ip`` (the module is skipped otherwise). Traffic stays on
loopback and on the veth pair the test made.
"""
from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tests.peers.cluster import make_instance
from tests.peers.netns import Namespace, unavailable
from tests.peers.process import ADMIN, wait_until
from tests.peers.webhook import WebhookReceiver

if (why := unavailable()) is not None:
    pytest.skip(f"cluster consensus test skipped: {why}", allow_module_level=True)

LOCATIONS = {"primary": "frankfurt", "dep-a": "virginia", "dep-ns": "singapore"}
PATHS = ("/a", "/b", "/c", "/d")
INTERVAL = 5
CUT_SECONDS = 60
JSON = {"Content-Type": "application/json"}


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        pass  # ``Target.seen`` keeps every request; a log line each would bury a failure's output


class Target:
    """A real HTTP server answering 200 on ``PATHS``, except /a, which
    answers 502 as ``failing_for`` says: ``"one location"`` (requests from
    ``lone_client``, the default), ``"everyone"`` or ``"no one"``."""

    def __init__(self, address: str, lone_client: str):
        self.address = address
        self.lone_client = lone_client
        self.failing_for = "one location"
        self.seen: list[tuple[float, str, str, int]] = []  # (time.time(), path, client, status)
        self._lock = threading.Lock()
        self._server = make_server(address, 0, self._app, threaded=True, request_handler=_Quiet)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _app(self, environ, start_response):
        request = Request(environ)
        client = request.remote_addr
        if request.path not in PATHS:
            status = 404
        elif request.path == "/a" and (self.failing_for == "everyone"
                                       or (self.failing_for == "one location" and client == self.lone_client)):
            status = 502
        else:
            status = 200
        with self._lock:
            self.seen.append((time.time(), request.path, client, status))
        return Response(f"{request.path}: {status}", status=status)(environ, start_response)

    def url(self, path: str) -> str:
        return f"http://{self.address}:{self.port}{path}"

    def requests_from(self, client: str, since: float = 0.0, until: float = float("inf")) -> list[tuple]:
        with self._lock:
            return [r for r in self.seen if r[2] == client and since <= r[0] < until]

    def start(self) -> Target:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def network():
    namespace = Namespace("montest-consensus").create()
    try:
        yield namespace
    finally:
        namespace.delete()
        assert not namespace.exists(), f"network namespace {namespace.name} was not removed"


@pytest.fixture(scope="module")
def target(network):
    server = Target(network.host_address, lone_client=network.ns_address).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def webhook():
    # On loopback: only the primary sends alerts, from this host.
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, network):
    root = tmp_path_factory.mktemp("consensus")
    primary = make_instance(root, "primary", host=network.host_address, ENABLE_SYNC_API="true",
                            INSTANCE_LOCATION=LOCATIONS["primary"])
    dep_a = make_instance(root, "dep-a", PRIMARY_SYNC_URL=primary.sync, INSTANCE_LOCATION=LOCATIONS["dep-a"])
    dep_ns = make_instance(root, "dep-ns", host=network.ns_address, command_prefix=network.exec_prefix,
                           PRIMARY_SYNC_URL=primary.sync, INSTANCE_LOCATION=LOCATIONS["dep-ns"])
    instances = [primary, dep_a, dep_ns]
    try:
        for instance in instances:
            instance.start()
        yield {"primary": primary, "dep-a": dep_a, "dep-ns": dep_ns, "state": {}}
    finally:
        network.link_up()  # a test failing mid-cut leaves it down
        # All asked at once, then each waited for: stopping takes seconds.
        for instance in instances:
            instance.terminate()
        for instance in instances:
            instance.stop()
        left = [proc.pid for instance in instances for proc in instance.leftovers()]
        assert not left, f"processes outlived the cluster: {left}"


def logs(cluster, *names) -> str:
    return "\n".join(f"--- {name} log:\n{cluster[name].tail(4000)}" for name in names or ("primary",))


def own_id(instance) -> str:
    """The instance's id, from its own database (works while it is cut off)."""
    return instance.query("SELECT value FROM instance_config WHERE key = 'instance_id'")[0][0]


def endpoint(primary, endpoint_id: int) -> dict:
    answer = requests.get(f"{primary.web}/api/v1/endpoints/{endpoint_id}", auth=ADMIN, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def by_location(answer: dict) -> dict[str, dict]:
    return {row["location"]: row for row in answer["consensus"]["locations"]}


def db_time(moment: datetime) -> str:
    """A time as SQLite holds the monitor's (naive UTC, microseconds)."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def alerts(webhook, endpoint_id: int | None = None, event: str | None = None) -> list[dict]:
    return [p for p in webhook.payloads if p
            and (endpoint_id is None or p["endpoint"]["id"] == endpoint_id)
            and (event is None or p["event"] == event)]


@pytest.fixture(scope="module")
def monitored(cluster, target, webhook):
    """The webhook service (default for new endpoints) and the four endpoints,
    created on the primary once both dependents are registered; {path: id}."""
    primary = cluster["primary"]
    wait_until(lambda: len(primary.query("SELECT id FROM monitoring_instances")) == 3, 90,
               lambda: f"the dependents never registered;\n{logs(cluster, 'primary', 'dep-a', 'dep-ns')}")
    service = requests.post(f"{primary.web}/api/v1/notification-services", auth=ADMIN, headers=JSON, timeout=30,
                            json={"name": "Test hook", "kind": "webhook", "config": {"url": webhook.url("/hook")},
                                  "isDefault": True})
    assert service.status_code == 201, service.text
    ids = {}
    for path in PATHS:
        created = requests.post(f"{primary.web}/api/v1/endpoints", auth=ADMIN, headers=JSON, timeout=30, json={
            "name": f"target {path}", "checkType": "http", "target": target.url(path),
            "intervalSeconds": INTERVAL, "timeoutSeconds": 2, "failureThreshold": 1, "successThreshold": 1,
        })
        assert created.status_code == 201, created.text
        ids[path] = created.json()["id"]
    linked = primary.query("SELECT COUNT(*) FROM endpoint_notifications WHERE notification_service_id = ?",
                           (service.json()["id"],))[0][0]
    assert linked == len(PATHS), "the default webhook service was not given to every new endpoint"
    return ids


def test_one_location_failing_makes_it_partial_and_pages_nobody(cluster, target, webhook, monitored, network):
    primary = cluster["primary"]

    def all_three_report():
        answers = {path: endpoint(primary, eid) for path, eid in monitored.items()}
        for answer in answers.values():
            rows = by_location(answer)
            if set(rows) != set(LOCATIONS.values()):
                return None
            if not all(row["fresh"] and row["status"] in ("UP", "DOWN") and row["checkedAt"] for row in rows.values()):
                return None
        return answers

    answers = wait_until(all_three_report, 90,
                         lambda: f"not every location reported on every endpoint;\n"
                                 f"{logs(cluster, 'primary', 'dep-ns')}", interval=1)
    # The consensus follows the last location to report a moment later.
    answers = wait_until(
        lambda: (a := all_three_report()) and a["/a"]["consensus"]["status"] == "PARTIAL"
        and all(a[p]["consensus"]["status"] == "UP" for p in PATHS[1:]) and a,
        30, lambda: f"expected /a PARTIAL and /b-/d UP, got "
                    f"{ {p: a['consensus']['status'] for p, a in (all_three_report() or {}).items()} };\n"
                    f"{logs(cluster, 'primary')}", interval=1)

    a = answers["/a"]["consensus"]
    assert (a["status"], a["totalLocations"], a["successfulLocations"], a["rule"]) == ("PARTIAL", 3, 2, "majority")
    rows = by_location(answers["/a"])
    assert {loc: row["status"] for loc, row in rows.items()} == {
        "frankfurt": "UP", "virginia": "UP", "singapore": "DOWN"}
    assert not any(row["probeOffline"] for row in rows.values())
    assert {row["instanceName"] for row in rows.values()} == set(LOCATIONS)
    assert a["averageResponseTimeMs"] is not None
    for path in PATHS[1:]:
        c = answers[path]["consensus"]
        assert (c["status"], c["totalLocations"], c["successfulLocations"]) == ("UP", 3, 3), (path, c)
    # singapore really checks from inside the namespace, and only it is refused.
    from_ns = target.requests_from(network.ns_address)
    assert {(path, status) for _, path, _, status in from_ns} == {
        ("/a", 502), ("/b", 200), ("/c", 200), ("/d", 200)}
    assert all(status == 200 for _, path, client, status in target.seen if client != network.ns_address)

    partial = requests.get(f"{primary.web}/api/v1/endpoints", params={"consensus": "PARTIAL"}, auth=ADMIN,
                           timeout=10)
    assert partial.status_code == 200, partial.text
    assert [e["id"] for e in partial.json()["endpoints"]] == [monitored["/a"]]

    # It holds, and pages nobody: PARTIAL alerts are off by default.
    seen = set()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        seen.add(tuple(endpoint(primary, monitored[p])["consensus"]["status"] for p in PATHS))
        time.sleep(1)
    assert seen == {("PARTIAL", "UP", "UP", "UP")}
    assert webhook.payloads == [], f"alerts while only one location failed: {webhook.payloads}"


def test_failing_everywhere_pages_down_once_then_up_once(cluster, target, webhook, monitored):
    primary, endpoint_id = cluster["primary"], monitored["/a"]

    target.failing_for = "everyone"
    wait_until(lambda: endpoint(primary, endpoint_id)["consensus"]["status"] == "DOWN", 60,
               lambda: f"/a never went DOWN: {endpoint(primary, endpoint_id)['consensus']};\n"
                       f"{logs(cluster, 'primary')}", interval=1)
    down = wait_until(lambda: alerts(webhook, endpoint_id, "down"), 60,
                      lambda: f"no down alert reached the webhook: {webhook.payloads};\n{logs(cluster, 'primary')}")
    assert len(down) == 1
    # DOWN as soon as the rule holds: singapore and one more of the three.
    found = re.match(r"DOWN from (\d) of 3 locations: ", down[0]["reason"] or "")
    assert found and int(found[1]) >= 2, down[0]
    assert "singapore" in down[0]["reason"], down[0]
    assert (down[0]["status"], down[0]["previousStatus"]) == ("DOWN", "PARTIAL"), down[0]
    # Then every location sees it.
    wait_until(lambda: endpoint(primary, endpoint_id)["consensus"]["successfulLocations"] == 0, 30,
               lambda: f"not every location saw /a DOWN: {endpoint(primary, endpoint_id)['consensus']}", interval=1)

    target.failing_for = "no one"
    wait_until(lambda: endpoint(primary, endpoint_id)["consensus"]["status"] == "UP", 60,
               lambda: f"/a never came back UP: {endpoint(primary, endpoint_id)['consensus']};\n"
                       f"{logs(cluster, 'primary')}", interval=1)
    up = wait_until(lambda: alerts(webhook, endpoint_id, "up"), 60,
                    lambda: f"no up alert reached the webhook: {webhook.payloads};\n{logs(cluster, 'primary')}")
    assert len(up) == 1 and up[0]["status"] == "UP", up
    # No duplicates come later (deliveries are retried, sweeps run every ~15 s).
    time.sleep(20)
    assert [(p["endpoint"]["id"], p["event"]) for p in webhook.payloads] == [
        (endpoint_id, "down"), (endpoint_id, "up")], webhook.payloads
    cluster["state"]["alerts_before_cut"] = len(webhook.payloads)


def test_an_outbox_delivered_after_a_cut_is_history(cluster, target, webhook, monitored, network):
    primary, dep_ns = cluster["primary"], cluster["dep-ns"]
    ns_id = own_id(dep_ns)
    alerts_before = len(webhook.payloads)
    changes_before = primary.query("SELECT COALESCE(MAX(id), 0) FROM status_changes")[0][0]
    before = {path: endpoint(primary, eid)["consensus"] for path, eid in monitored.items()}
    assert all(c["status"] == "UP" and c["totalLocations"] == 3 for c in before.values()), before

    cut_at = datetime.now(timezone.utc)
    network.link_down()
    cut_clock = time.monotonic()
    # Silent, singapore goes stale and stops voting; two locations keep it UP.
    stale = wait_until(
        lambda: (b := endpoint(primary, monitored["/b"]))["consensus"]["totalLocations"] == 2
        and not by_location(b)["singapore"]["fresh"] and b,
        CUT_SECONDS - 5, lambda: f"singapore never went stale: {endpoint(primary, monitored['/b'])};\n"
                                 f"{logs(cluster, 'primary')}", interval=1)
    assert stale["consensus"]["status"] == "UP"
    time.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_clock)))
    outbox = dep_ns.query("SELECT COUNT(*), SUM(CASE WHEN is_ok THEN 0 ELSE 1 END) FROM response_times "
                          "WHERE instance_id = ? AND synced_at IS NULL", (ns_id,))[0]
    back_at = datetime.now(timezone.utc)
    network.link_up()
    assert not target.requests_from(network.ns_address, cut_at.timestamp() + 1, back_at.timestamp()), \
        "the namespace reached the target while cut off"
    # Its checks failed meanwhile and wait in its outbox.
    assert outbox[0] >= 4 and outbox[1] >= 4, f"outbox at the end of the cut (rows, failing): {outbox}"

    def unsent():
        return dep_ns.query("SELECT COUNT(*) FROM response_times WHERE instance_id = ? AND synced_at IS NULL",
                            (ns_id,))[0][0]

    # Failed rounds during the cut backed off; the first probe that finds the
    # primary again ends the backoff.
    wait_until(lambda: unsent() == 0, 150,
               lambda: f"singapore's outbox never drained ({unsent()} unsent);\n{logs(cluster, 'dep-ns', 'primary')}",
               interval=1)
    drained_after = time.monotonic() - cut_clock - CUT_SECONDS
    time.sleep(15)

    # History, not votes: no change of consensus at all, hence no alert.
    changes = primary.query("SELECT endpoint_id, from_status, to_status, changed_at, reason FROM status_changes "
                            "WHERE id > ?", (changes_before,))
    assert changes == [], f"the late outbox changed the consensus: {changes}"
    assert len(webhook.payloads) == alerts_before, f"alerts after the cut: {webhook.payloads[alerts_before:]}"
    votes_from = primary.query("SELECT votes_from FROM probe_states WHERE instance_id = ?", (ns_id,))[0][0]
    assert votes_from is not None and votes_from >= db_time(back_at - timedelta(seconds=1)), (
        f"the primary did not take singapore's return as the start of its votes: votes_from={votes_from}, "
        f"link back at {db_time(back_at)}")
    # Applied, the failing outbox would have ended singapore's run of
    # successes on /b: the run would count only results since the link came
    # back. As history, the run goes on from before the cut.
    failures, successes = primary.query(
        "SELECT consecutive_failures, consecutive_successes FROM location_status "
        "WHERE endpoint_id = ? AND instance_id = ?", (monitored["/b"], ns_id))[0]
    since_back = primary.query("SELECT COUNT(*) FROM response_times WHERE endpoint_id = ? AND instance_id = ? "
                               "AND checked_at >= ?", (monitored["/b"], ns_id, db_time(back_at)))[0][0]
    assert failures == 0 and successes > since_back, (
        f"singapore's /b run on the primary: {failures} failures, {successes} successes; "
        f"{since_back} of its /b results since the link came back")
    # Voting again, and UP everywhere.
    for path, eid in monitored.items():
        answer = endpoint(primary, eid)
        assert (answer["consensus"]["status"], answer["consensus"]["totalLocations"]) == ("UP", 3), (path, answer)

    # Every result singapore made is on the primary once: nothing lost, nothing twice.
    # It goes on checking, so the newest of them may still be on their way
    # (in its outbox): each must arrive within a few heartbeats.
    produced = {row[0] for row in dep_ns.query("SELECT result_id FROM response_times WHERE instance_id = ?",
                                               (ns_id,))}

    def stored_on_primary():
        return primary.query("SELECT result_id, COUNT(*) FROM response_times WHERE instance_id = ? "
                             "GROUP BY result_id", (ns_id,))

    def missing_now():
        return produced - {row[0] for row in stored_on_primary()}

    wait_until(lambda: not missing_now(), 30,
               lambda: f"{len(missing_now())} of singapore's {len(produced)} results never reached the primary; "
                       f"log:\n{dep_ns.tail()}")
    stored = stored_on_primary()
    twice = [row for row in stored if row[1] != 1]
    assert twice == [], f"results stored more than once: {twice[:10]}"
    total, distinct = primary.query("SELECT COUNT(*), COUNT(DISTINCT result_id) FROM response_times")[0]
    assert total == distinct
    window = (ns_id, db_time(cut_at), db_time(back_at))
    cut_sql = ("SELECT COUNT(*), SUM(CASE WHEN is_ok THEN 0 ELSE 1 END) FROM response_times "
               "WHERE instance_id = ? AND checked_at >= ? AND checked_at < ?")
    during_ns, during_primary = dep_ns.query(cut_sql, window)[0], primary.query(cut_sql, window)[0]
    assert during_ns == during_primary and during_ns[1] >= 4, (during_ns, during_primary)
    print(f"\nsingapore: {len(produced)} results made, {len(stored)} distinct on the primary, "
          f"{total} results in all on the primary ({distinct} distinct); during the {CUT_SECONDS} s cut "
          f"{during_ns[0]} made ({during_ns[1]} failing), {outbox[0]} unsent at its end ({outbox[1]} failing); "
          f"outbox drained {drained_after:.0f} s after the link came back; votes_from={votes_from}; "
          f"its /b run on the primary {successes} successes, {since_back} /b results since the link came back")
