"""Automatic failover with real process trees on loopback: five members,
so that a majority (three) survives two of them down.

    p  the first primary (ENABLE_SYNC_API=true), failover order 5
    a  dependent, failover order 1 (the first candidate)
    b  dependent, failover order 2
    c  dependent, failover order 3
    d  dependent, failover order 0 (never promotes; follows and votes)

With the default FAILOVER_CHECK_INTERVAL and FAILOVER_MAX_FAILURES. The
tests run in order against one cluster, each starting where the last left
it:

1. p is SIGKILLed: a promotes, b, c and d follow it, checking never stops,
   every result made by the survivors is on a exactly once; the incident
   p alerted is not alerted again, its recovery is alerted once, by a.
2. p restarted with its original environment joins as a dependent of a.
3. a is frozen (SIGSTOP) past b's promotion, then thawed (SIGCONT): it
   steps down, accepted no result as a primary after the promotion, and
   sends b what b lacked.
4. A planned hand-over through the sync API (POST /sync/api/promote on c),
   then back by demotion (POST /sync/api/demote/<c> hands over to a, the
   first live candidate): nothing is lost.
5. The primary (a) and the first candidate after it (b) are both killed:
   c, the next in order, promotes.

Results are counted by ``result_id`` on every database.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest
import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tests.peers.cluster import make_instance
from tests.peers.process import ADMIN, wait_until
from tests.peers.webhook import WebhookReceiver

ORDERS = {"p": 5, "a": 1, "b": 2, "c": 3, "d": 0}
INTERVAL = 5
JSON = {"Content-Type": "application/json"}
# Default settings: suspected after 3 probes 3 s apart; 30 s is the goal
# for a new primary to accept results, 60 s leaves room on a loaded machine.
FAILOVER_WITHIN = 60


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        pass


class Target:
    """A real HTTP server on loopback: /ok answers 200, /flaky 502 while
    ``failing`` is set, else 200."""

    def __init__(self):
        self.failing = True
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_Quiet)
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _app(self, environ, start_response):
        path = Request(environ).path
        status = 502 if path == "/flaky" and self.failing else 200 if path in ("/ok", "/flaky") else 404
        return Response(f"{path}: {status}", status=status)(environ, start_response)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def target():
    server = Target()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def webhook():
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("failover")
    p = make_instance(root, "p", ENABLE_SYNC_API="true", INSTANCE_LOCATION="paris", FAILOVER_ORDER=ORDERS["p"],
                      WORKER_PROCESSES=1)
    members = {"p": p}
    for name, location in (("a", "amsterdam"), ("b", "berlin"), ("c", "cairo"), ("d", "dublin")):
        members[name] = make_instance(root, name, PRIMARY_SYNC_URL=p.sync, INSTANCE_LOCATION=location,
                                      FAILOVER_ORDER=ORDERS[name], WORKER_PROCESSES=1)
    try:
        p.start()
        for name in "abcd":
            members[name].launch()
        for name in "abcd":
            members[name].wait_started()
        yield members
    finally:
        for instance in members.values():
            _thaw(instance)
            instance.terminate()
        for instance in members.values():
            instance.stop()
        left = [proc.pid for instance in members.values() for proc in instance.leftovers()]
        assert not left, f"processes outlived the cluster: {left}"


def _thaw(instance) -> None:
    import os
    import signal

    if instance.process is not None and instance.process.poll() is None:
        try:
            os.killpg(instance.process.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def logs(cluster, *names) -> str:
    return "\n".join(f"--- {name} log:\n{cluster[name].tail(3000)}" for name in names)


def state(instance) -> dict:
    """Role, epoch and primary from the instance's own database (works
    while it is frozen)."""
    return dict(instance.query("SELECT key, value FROM instance_config WHERE key IN "
                               "('instance_id', 'role', 'epoch', 'primary_url', 'primary_id')"))


def own_id(instance) -> str:
    return state(instance)["instance_id"]


def own_results(instance) -> set[str]:
    return {row[0] for row in instance.query("SELECT result_id FROM response_times WHERE instance_id = ?",
                                             (own_id(instance),))}


def all_results(instance) -> set[str]:
    return {row[0] for row in instance.query("SELECT result_id FROM response_times")}


def no_duplicates(instance) -> None:
    total, distinct = instance.query("SELECT COUNT(*), COUNT(DISTINCT result_id) FROM response_times")[0]
    assert total == distinct, f"{instance.name} stores {total - distinct} results twice"


def events(instance, kind: str) -> list[tuple]:
    return instance.query("SELECT at, epoch, subject_id, detail FROM cluster_events WHERE kind = ? ORDER BY id",
                          (kind,))


def is_primary(instance, epoch: int) -> bool:
    current = state(instance)
    return current["role"] == "primary" and int(current["epoch"]) == epoch


def follows(instance, leader, epoch: int) -> bool:
    current = state(instance)
    return (current["role"] == "dependent" and int(current["epoch"]) == epoch
            and current["primary_url"] == leader.sync)


def outbox(instance) -> int:
    return instance.query("SELECT COUNT(*) FROM response_times WHERE synced_at IS NULL")[0][0]


def caught_up(instance, epoch: int) -> bool:
    """The instance registered with the primary of ``epoch``, queued again
    what that primary lacked, and sent all of it."""
    done = instance.query("SELECT value FROM instance_config WHERE key = 'caught_up_epoch'")
    return bool(done) and int(done[0][0]) >= epoch and outbox(instance) == 0


def newest_from(primary, maker) -> datetime | None:
    value = primary.query("SELECT MAX(checked_at) FROM response_times WHERE instance_id = ?", (own_id(maker),))[0][0]
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc) if value else None


def delivered_to(primary, makers) -> None:
    """Wait until every result each of ``makers`` holds of its own, counted
    now, is on ``primary``; then check nobody's results are stored twice."""
    for maker in makers:
        made = own_results(maker)
        wait_until(lambda: made <= all_results(primary), 120,
                   lambda: f"{len(made - all_results(primary))} of {maker.name}'s {len(made)} results are not on "
                           f"{primary.name};\n--- {maker.name}:\n{maker.tail(3000)}\n--- {primary.name}:\n"
                           f"{primary.tail(3000)}")
    no_duplicates(primary)


def checking_never_stopped(instance, since: float, until: float) -> None:
    """The instance's own results cover [since, until] with no gap longer
    than a few intervals."""
    rows = instance.query("SELECT checked_at FROM response_times WHERE instance_id = ? AND checked_at >= ? "
                          "ORDER BY checked_at", (own_id(instance), _db_time(since - 10)))
    times = [datetime.fromisoformat(r[0]).replace(tzinfo=timezone.utc).timestamp() for r in rows]
    times = [t for t in times if t <= until]
    assert times and times[0] <= since + 3 * INTERVAL, f"{instance.name} made no result near {since}"
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps, default=0) < 4 * INTERVAL + 3, f"{instance.name} stopped checking for {max(gaps):.0f} s"


def _db_time(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def alerts(webhook, event: str | None = None) -> list[dict]:
    return [p for p in webhook.payloads if p and (event is None or p["event"] == event)]


@pytest.fixture(scope="module")
def monitored(cluster, target, webhook):
    """A default webhook service and two endpoints (/ok, /flaky, failing),
    made on p once everyone is registered; {path: id}."""
    p = cluster["p"]
    wait_until(lambda: len(p.query("SELECT id FROM monitoring_instances")) == 5, 90,
               lambda: f"not everyone registered;\n{logs(cluster, 'p', 'a', 'd')}")
    service = requests.post(f"{p.web}/api/v1/notification-services", auth=ADMIN, headers=JSON, timeout=30,
                            json={"name": "Pager", "kind": "webhook", "config": {"url": webhook.url("/hook")},
                                  "isDefault": True})
    assert service.status_code == 201, service.text
    ids = {}
    for path in ("/ok", "/flaky"):
        created = requests.post(f"{p.web}/api/v1/endpoints", auth=ADMIN, headers=JSON, timeout=30, json={
            "name": f"target {path}", "checkType": "http", "target": target.url(path), "intervalSeconds": INTERVAL,
            "timeoutSeconds": 2, "failureThreshold": 1, "successThreshold": 1})
        assert created.status_code == 201, created.text
        ids[path] = created.json()["id"]
    # Every candidate holds what a primary needs before anyone is killed.
    for name in "abc":
        wait_until(lambda: cluster[name].query("SELECT COUNT(*) FROM notification_services")[0][0] == 1
                   and cluster[name].query("SELECT COUNT(*) FROM users")[0][0] >= 1
                   and cluster[name].query("SELECT COUNT(*) FROM monitoring_instances")[0][0] == 5, 60,
                   lambda: f"{name} never received the whole configuration;\n{logs(cluster, name)}")
    return ids


def test_a_killed_primary_is_replaced_and_nothing_is_lost_or_paged_twice(cluster, monitored, target, webhook):
    p, a, b, c, d = (cluster[n] for n in "pabcd")
    flaky = monitored["/flaky"]
    wait_until(lambda: alerts(webhook, "down"), 60, lambda: f"p never alerted /flaky DOWN;\n{logs(cluster, 'p')}")
    # The candidates hold the incident as alerted before p dies.
    for name in "abc":
        wait_until(lambda: cluster[name].query("SELECT alerted_status FROM endpoints WHERE id = ?", (flaky,))[0][0]
                   == "DOWN", 30, lambda: f"{name} does not hold the incident;\n{logs(cluster, name)}")
    downs_before = len(alerts(webhook, "down"))

    killed_at = time.time()
    p.kill()
    wait_until(lambda: is_primary(a, 1), FAILOVER_WITHIN,
               lambda: f"a did not become the primary;\n{logs(cluster, 'a', 'b', 'd')}")
    for name in "bcd":
        wait_until(lambda: follows(cluster[name], a, 1), FAILOVER_WITHIN,
                   lambda: f"{name} does not follow a;\n{logs(cluster, name, 'a')}")
    # a accepts results: b's, checked after the kill, are stored there.
    wait_until(lambda: (newest := newest_from(a, b)) and newest.timestamp() > killed_at, FAILOVER_WITHIN,
               lambda: f"a stores no new result from b;\n{logs(cluster, 'a', 'b')}")
    promoted = events(a, "promote")
    assert len(promoted) == 1 and promoted[0][1] == 1
    assert not events(b, "promote") and not events(c, "promote") and not events(d, "promote")

    delivered_to(a, [b, c, d])
    # Results p acknowledged before it died came again from their makers.
    for survivor in (a, b, c, d):
        checking_never_stopped(survivor, killed_at, time.time() - 2)

    # One notification names the new primary; the incident p alerted is not
    # alerted again; its recovery is alerted once, by a.
    wait_until(lambda: any("primary is now a" in (x["title"]) for x in alerts(webhook, "cluster")), 30,
               lambda: f"no cluster notification;\n{logs(cluster, 'a')}")
    assert len(alerts(webhook, "cluster")) == 1
    time.sleep(3 * INTERVAL)
    assert len(alerts(webhook, "down")) == downs_before, "the incident was alerted again after the failover"
    target.failing = False
    wait_until(lambda: alerts(webhook, "up"), 60, lambda: f"the recovery was never alerted;\n{logs(cluster, 'a')}")
    time.sleep(3 * INTERVAL)
    ups = alerts(webhook, "up")
    assert len(ups) == 1 and ups[0]["instance"]["id"] == own_id(a)


def test_the_old_primary_restarted_as_it_was_joins_as_a_dependent(cluster):
    p, a = cluster["p"], cluster["a"]
    assert p.env["ENABLE_SYNC_API"] == "true"
    p.start()
    wait_until(lambda: follows(p, a, 1), 60, lambda: f"p did not join a;\n{logs(cluster, 'p', 'a')}")
    assert events(p, "step_down")
    restarted = time.time()
    wait_until(lambda: (newest := newest_from(a, p)) and newest.timestamp() > restarted, 60,
               lambda: f"p's results do not reach a;\n{logs(cluster, 'p', 'a')}")
    # Whatever p held that a lacked (everyone's results of epoch 0) is on a.
    wait_until(lambda: caught_up(p, 1), 120, lambda: f"p never caught a up;\n{logs(cluster, 'p')}")
    missing = all_results(p) - all_results(a)
    assert not missing, f"{len(missing)} results p holds are not on a"
    no_duplicates(a)


def test_a_frozen_primary_steps_down_once_thawed(cluster):
    import os
    import signal

    a, b = cluster["a"], cluster["b"]
    a_id = own_id(a)
    os.killpg(a.process.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: is_primary(b, 2), FAILOVER_WITHIN,
                   lambda: f"b did not become the primary;\n{logs(cluster, 'b', 'c')}")
        for name in "cdp":
            wait_until(lambda: follows(cluster[name], b, 2), FAILOVER_WITHIN,
                       lambda: f"{name} does not follow b;\n{logs(cluster, name, 'b')}")
    finally:
        os.killpg(a.process.pid, signal.SIGCONT)
    promoted_at = events(b, "promote")[-1][0]
    wait_until(lambda: follows(a, b, 2), 60, lambda: f"a did not step down;\n{logs(cluster, 'a', 'b')}")
    assert events(a, "step_down") or events(a, "fence")
    # Nothing from another location was stored on a after b's promotion.
    late = a.query("SELECT COUNT(*) FROM response_times WHERE instance_id != ? AND checked_at > ?",
                   (a_id, promoted_at))[0][0]
    assert late == 0, f"a stored {late} results from others after b was promoted"
    wait_until(lambda: caught_up(a, 2), 120, lambda: f"a never caught b up;\n{logs(cluster, 'a')}")
    missing = all_results(a) - all_results(b)
    assert not missing, f"{len(missing)} results a holds are not on b"
    delivered_to(b, [a, cluster["c"], cluster["d"], cluster["p"]])


def test_a_planned_hand_over_loses_nothing(cluster):
    b, c = cluster["b"], cluster["c"]
    answer = requests.post(f"{c.sync}/sync/api/promote", auth=ADMIN, timeout=60)
    assert answer.status_code == 200, answer.text
    assert is_primary(c, 3)
    for name in "abdp":
        wait_until(lambda: follows(cluster[name], c, 3), 60,
                   lambda: f"{name} does not follow c;\n{logs(cluster, name, 'c')}")
    assert events(b, "hand_over")
    wait_until(lambda: caught_up(b, 3), 120, lambda: f"b never caught c up;\n{logs(cluster, 'b')}")
    delivered_to(c, [cluster[n] for n in "abdp"])
    missing = all_results(b) - all_results(c)
    assert not missing, f"{len(missing)} results b held are not on c"


def test_a_demotion_hands_over_to_the_first_live_candidate(cluster):
    a, c = cluster["a"], cluster["c"]
    answer = requests.post(f"{c.sync}/sync/api/demote/{own_id(c)}", auth=ADMIN, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["primaryId"] == own_id(a)
    assert is_primary(a, 4)
    for name in "bcdp":
        wait_until(lambda: follows(cluster[name], a, 4), 60,
                   lambda: f"{name} does not follow a;\n{logs(cluster, name, 'a')}")
    wait_until(lambda: caught_up(c, 4), 120, lambda: f"c never caught a up;\n{logs(cluster, 'c')}")
    delivered_to(a, [cluster[n] for n in "bcdp"])


def test_when_the_first_candidate_is_down_too_the_next_promotes(cluster):
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    a.kill()  # the primary
    b.kill()  # and the first candidate after it
    wait_until(lambda: is_primary(c, 5), FAILOVER_WITHIN,
               lambda: f"c did not become the primary;\n{logs(cluster, 'c', 'd', 'p')}")
    for name in "dp":
        wait_until(lambda: follows(cluster[name], c, 5), FAILOVER_WITHIN,
                   lambda: f"{name} does not follow c;\n{logs(cluster, name, 'c')}")
    delivered_to(c, [cluster["d"], cluster["p"]])
