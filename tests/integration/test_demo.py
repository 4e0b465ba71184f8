"""``python -m app demo`` as a user runs it: a real subprocess that starts
three real process trees and a target, prints where to sign in, shows the
checkout endpoint PARTIAL (failing from singapore only), and on SIGINT
stops every process it started and removes its temporary folder.

The tests run in order against one demo (it takes some 20 s to start); the
last one stops it.
"""
from __future__ import annotations

import re
import signal

import psutil
import pytest
import requests

from tests.peers.demo import DemoRun, hold_port
from tests.peers.ports import reserve_port
from tests.peers.process import wait_until

pytestmark = pytest.mark.process_tree

LOCATIONS = {"demo-frankfurt": "frankfurt", "demo-virginia": "virginia", "demo-singapore": "singapore"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    # 3001 taken: the demo must find other ports by itself.
    held = hold_port(3001)
    run = DemoRun(tmp_path_factory.mktemp("demo"))
    try:
        run.wait_ready()
        yield run
    finally:
        run.kill_everything()
        if held is not None:
            held.close()


def api(demo: DemoRun, path: str, base: str | None = None) -> dict:
    response = requests.get(f"{base or demo.shown('Dashboard').rstrip('/')}{path}",
                            auth=(demo.shown("Email"), demo.shown("Password")), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_it_prints_where_to_sign_in_on_ports_it_found_free(demo):
    dashboard = demo.shown("Dashboard")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", dashboard)
    assert not dashboard.endswith(":3001/")  # held by this test
    assert "(generated for this run)" in demo.output
    signed_in = requests.get(f"{dashboard}api/v1/endpoints", auth=(demo.shown("Email"), demo.shown("Password")),
                             timeout=30)
    assert signed_in.status_code == 200
    wrong = requests.get(f"{dashboard}api/v1/endpoints", auth=(demo.shown("Email"), "not the password"), timeout=30)
    assert wrong.status_code == 401
    # Progress came before the announcement: a line per instance.
    for location in LOCATIONS.values():
        assert re.search(rf"^\s+{location}\s+(primary|dependent)\s+http://127\.0\.0\.1:\d+/ \.\.\. up", demo.output,
                         re.MULTILINE), demo.output


def test_three_instances_with_their_own_names_locations_and_coordinates(demo):
    members = api(demo, "/api/v1/instances")["instances"]
    assert {m["instanceName"]: m["location"] for m in members} == LOCATIONS
    assert sorted(m["role"] for m in members) == ["dependent", "dependent", "primary"]
    launchers = [p for p in psutil.Process(demo.process.pid).children()
                 if p.cmdline()[-3:] == ["-m", "app", "start"]]
    assert len(launchers) == 3
    environments = [p.environ() for p in launchers]
    data_dirs = {env["DATA_DIR"] for env in environments}
    assert len(data_dirs) == 3 and all(d.startswith(str(demo.tmp)) for d in data_dirs)
    # The dependents' UIs take the same sign-in and hold the primary's endpoints.
    dependents = re.findall(r"(http://127\.0\.0\.1:\d+)/ \((virginia|singapore)\)", demo.output)
    assert sorted(location for _, location in dependents) == ["singapore", "virginia"]
    primary_names = {e["name"] for e in api(demo, "/api/v1/endpoints")["endpoints"]}
    for base, _ in dependents:
        wait_until(lambda: {e["name"] for e in api(demo, "/api/v1/endpoints", base)["endpoints"]} == primary_names,
                   60, f"the endpoints did not reach {base}")
    coordinates = {(env["INSTANCE_LATITUDE"], env["INSTANCE_LONGITUDE"]) for env in environments}
    assert len(coordinates) == 3
    assert all(-90 <= float(lat) <= 90 and -180 <= float(lon) <= 180 for lat, lon in coordinates)


def test_the_checkout_fails_from_singapore_only_so_it_is_partial(demo):
    def settled():
        endpoints = {e["name"]: e for e in api(demo, "/api/v1/endpoints")["endpoints"]}
        seen = {name: {row["location"]: row["status"] for row in e["consensus"]["locations"]}
                for name, e in endpoints.items()}
        return all(len(statuses) == 3 for statuses in seen.values()) and (endpoints, seen)

    endpoints, seen = wait_until(settled, 90, "not every location has checked every endpoint")
    assert endpoints["Checkout API"]["status"] == "PARTIAL"
    assert seen["Checkout API"] == {"frankfurt": "UP", "virginia": "UP", "singapore": "DOWN"}
    assert (endpoints["Checkout API"]["consensus"]["successfulLocations"],
            endpoints["Checkout API"]["consensus"]["totalLocations"]) == (2, 3)
    others = {name: e["status"] for name, e in endpoints.items() if name != "Checkout API"}
    assert set(others.values()) == {"UP"}, seen
    assert {e["checkType"] for e in endpoints.values()} >= {"http", "tcp"}
    # The 503 was the target's answer to singapore's User-Agent.
    failing = api(demo, f"/api/v1/endpoints/{endpoints['Checkout API']['id']}/results?limit=50")["results"]
    reasons = {r["location"]: r["failureReason"] for r in failing if r["status"] == "DOWN"}
    assert set(reasons) == {"singapore"} and "HTTP 503" in reasons["singapore"]


def test_sigint_stops_every_process_and_removes_its_folder(demo):
    tree = psutil.Process(demo.process.pid).children(recursive=True)
    tree += [p for p in demo.leftovers() if p not in tree]
    names = {p.name() for p in tree}
    assert len(tree) >= 3 * 5, names  # launcher, web, sync, clock, worker (and redis-server) each
    assert "redis-server" in {p.name() for p in tree}
    [folder] = list(demo.tmp.glob("monitor-demo-*"))

    demo.process.send_signal(signal.SIGINT)
    assert demo.process.wait(timeout=90) == 0, demo.output
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == []
    assert demo.leftovers() == []
    assert not folder.exists()
    assert list(demo.tmp.iterdir()) == []
    demo.reader.join(timeout=10)
    assert demo.lines[-1] == f"Stopped; removed {folder}."


def test_a_busy_port_is_a_clear_error_and_starts_nothing(tmp_path):
    port = reserve_port()
    held = hold_port(port)
    assert held is not None
    try:
        run = DemoRun(tmp_path, "--port", str(port))
        try:
            assert run.process.wait(timeout=60) == 2
            run.reader.join(timeout=10)
        finally:
            run.kill_everything()
    finally:
        held.close()
    assert f"--port {port}: 127.0.0.1 port {port} is in use" in run.output
    assert list(tmp_path.iterdir()) == []


def test_sigint_while_it_starts_stops_what_it_started(tmp_path_factory):
    run = DemoRun(tmp_path_factory.mktemp("early"))
    try:
        # The primary answers, the dependents are starting.
        wait_until(lambda: "virginia" in run.output or run.process.poll() is not None, 180,
                   lambda: f"the dependents never started:\n{run.output}")
        assert run.process.poll() is None, run.output
        tree = psutil.Process(run.process.pid).children(recursive=True)
        assert len(tree) >= 3
        run.process.send_signal(signal.SIGINT)
        assert run.process.wait(timeout=90) == 0, run.output
        _, alive = psutil.wait_procs(tree, timeout=10)
        assert alive == []
        assert run.leftovers() == []
        assert list(run.tmp.iterdir()) == []
        run.reader.join(timeout=10)
        assert "The demo is running" not in run.output
        assert run.lines[-1].startswith("Stopped; removed ")
    finally:
        run.kill_everything()
