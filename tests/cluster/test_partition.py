"""Partitions, with real process trees: the first primary (p) runs inside
a network namespace of the test's own, joined to this host by a veth pair;
two dependents (a, order 1; b, order 2) run on this host, listening on the
host's end of the pair. Cutting the pair cuts p off alone.

1. p cut off alone: it fences itself (keeps checking, accepts nothing,
   alerts nothing), the majority side (a, b) promotes a; once the link is
   back, p steps down, follows a, and a receives what p made meanwhile.
2. p, now a dependent, cut off alone again: it never promotes, keeps
   checking, and delivers its outbox when reconnected.

Needs root and ``ip`` (skipped otherwise). Traffic stays on loopback and on
the veth pair the test made.
"""
from __future__ import annotations

import threading
import time

import pytest
import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tests.peers.cluster import make_instance
from tests.peers.netns import Namespace, unavailable
from tests.peers.process import ADMIN, wait_until

if (why := unavailable()) is not None:
    pytest.skip(f"partition test skipped: {why}", allow_module_level=True)

INTERVAL = 5
JSON = {"Content-Type": "application/json"}
FAILOVER_WITHIN = 60


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        pass


@pytest.fixture(scope="module")
def network():
    namespace = Namespace("montest-partition").create()
    try:
        yield namespace
    finally:
        namespace.delete()
        assert not namespace.exists(), f"network namespace {namespace.name} was not removed"


@pytest.fixture(scope="module")
def target(network):
    """A real HTTP server on the host's end of the pair: 200 on /ok."""
    def app(environ, start_response):
        return Response("ok", status=200 if Request(environ).path == "/ok" else 404)(environ, start_response)

    server = make_server(network.host_address, 0, app, threaded=True, request_handler=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://{network.host_address}:{server.server_port}/ok"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, network):
    root = tmp_path_factory.mktemp("partition")
    p = make_instance(root, "p", host=network.ns_address, command_prefix=network.exec_prefix,
                      ENABLE_SYNC_API="true", INSTANCE_LOCATION="paris", FAILOVER_ORDER=3, WORKER_PROCESSES=1)
    a = make_instance(root, "a", host=network.host_address, PRIMARY_SYNC_URL=p.sync, INSTANCE_LOCATION="amsterdam",
                      FAILOVER_ORDER=1, WORKER_PROCESSES=1)
    b = make_instance(root, "b", host=network.host_address, PRIMARY_SYNC_URL=p.sync, INSTANCE_LOCATION="berlin",
                      FAILOVER_ORDER=2, WORKER_PROCESSES=1)
    members = {"p": p, "a": a, "b": b}
    try:
        p.start()
        a.launch()
        b.launch()
        a.wait_started()
        b.wait_started()
        yield members
    finally:
        network.link_up()  # a test failing mid-cut leaves it down
        for instance in members.values():
            instance.terminate()
        for instance in members.values():
            instance.stop()
        left = [proc.pid for instance in members.values() for proc in instance.leftovers()]
        assert not left, f"processes outlived the cluster: {left}"


def logs(cluster, *names) -> str:
    return "\n".join(f"--- {name} log:\n{cluster[name].tail(3000)}" for name in names)


def state(instance) -> dict:
    return dict(instance.query("SELECT key, value FROM instance_config WHERE key IN "
                               "('instance_id', 'role', 'epoch', 'primary_url')"))


def own_results(instance) -> set[str]:
    return {row[0] for row in instance.query("SELECT result_id FROM response_times WHERE instance_id = ?",
                                             (state(instance)["instance_id"],))}


def all_results(instance) -> set[str]:
    return {row[0] for row in instance.query("SELECT result_id FROM response_times")}


def events(instance, kind: str) -> list[tuple]:
    return instance.query("SELECT at, epoch FROM cluster_events WHERE kind = ? ORDER BY id", (kind,))


@pytest.fixture(scope="module")
def monitored(cluster, target):
    p = cluster["p"]
    wait_until(lambda: len(p.query("SELECT id FROM monitoring_instances")) == 3, 90,
               lambda: f"not everyone registered;\n{logs(cluster, 'p', 'a', 'b')}")
    created = requests.post(f"{p.web}/api/v1/endpoints", auth=ADMIN, headers=JSON, timeout=30, json={
        "name": "target", "checkType": "http", "target": target, "intervalSeconds": INTERVAL, "timeoutSeconds": 1})
    assert created.status_code == 201, created.text
    for name in "ab":
        wait_until(lambda: cluster[name].query("SELECT COUNT(*) FROM monitoring_instances")[0][0] == 3
                   and cluster[name].query("SELECT COUNT(*) FROM endpoints")[0][0] == 1, 60,
                   lambda: f"{name} never received the configuration;\n{logs(cluster, name)}")
    return created.json()["id"]


def test_a_primary_cut_off_alone_fences_itself_and_the_majority_promotes(cluster, monitored, network):
    p, a, b = cluster["p"], cluster["a"], cluster["b"]
    network.link_down()
    try:
        wait_until(lambda: state(a)["role"] == "primary" and state(a)["epoch"] == "1", FAILOVER_WITHIN,
                   lambda: f"a did not become the primary;\n{logs(cluster, 'a', 'b')}")
        wait_until(lambda: state(b)["role"] == "dependent" and state(b)["primary_url"] == a.sync, FAILOVER_WITHIN,
                   lambda: f"b does not follow a;\n{logs(cluster, 'b')}")
        wait_until(lambda: state(p)["role"] == "fenced", FAILOVER_WITHIN,
                   lambda: f"p did not fence itself;\n{logs(cluster, 'p')}")
        fenced_at = time.time()
        made = len(own_results(p))
        # Fenced, p keeps checking (its target is on the far side of the cut:
        # its results say DOWN, and they are results).
        wait_until(lambda: len(own_results(p)) >= made + 2, 30, lambda: f"p stopped checking;\n{logs(cluster, 'p')}")
        assert state(p)["epoch"] == "0"
        assert time.time() - fenced_at < 30
    finally:
        network.link_up()
    wait_until(lambda: state(p)["role"] == "dependent" and state(p)["primary_url"] == a.sync, 60,
               lambda: f"p did not step down to follow a;\n{logs(cluster, 'p', 'a')}")
    made = own_results(p)
    wait_until(lambda: made <= all_results(a), 120,
               lambda: f"{len(made - all_results(a))} of p's results never reached a;\n{logs(cluster, 'p', 'a')}")
    total, distinct = a.query("SELECT COUNT(*), COUNT(DISTINCT result_id) FROM response_times")[0]
    assert total == distinct


def test_a_dependent_cut_off_alone_never_promotes_and_delivers_its_outbox(cluster, network):
    p, a = cluster["p"], cluster["a"]
    epoch = state(p)["epoch"]
    promotions = len(events(p, "promote"))
    network.link_down()
    try:
        made = len(own_results(p))
        # Three times as long as suspecting takes with the defaults (9 s).
        time.sleep(30)
        assert state(p)["role"] == "dependent" and state(p)["epoch"] == epoch
        assert len(events(p, "promote")) == promotions
        assert len(own_results(p)) >= made + 30 // INTERVAL - 3, "p stopped checking while cut off"
        assert p.query("SELECT COUNT(*) FROM response_times WHERE synced_at IS NULL")[0][0] > 0
    finally:
        network.link_up()
    made = own_results(p)
    wait_until(lambda: made <= all_results(a), 120,
               lambda: f"{len(made - all_results(a))} of p's results never reached a;\n{logs(cluster, 'p', 'a')}")
    assert state(a)["role"] == "primary"
