"""A primary and two dependents as real process trees on loopback.

The tests run in order against one cluster: registration, configuration
reaching the dependents, results from all three locations, a primary killed
with SIGKILL and restarted (nothing lost, nothing twice), a dependent killed
and restarted (same identity), and an instance deleted (token revoked).
"""
import socket
import threading

import pytest
import requests
from cryptography.fernet import Fernet

from app.secret_box import looks_encrypted
from tests.peers.browser import browser, needs_chromium, new_page  # noqa: F401 - browser is a fixture
from tests.peers.cluster import make_instance
from tests.peers.process import ADMIN, wait_until

LOCATIONS = {"primary": "frankfurt", "dep-a": "virginia", "dep-b": "singapore"}


@pytest.fixture(scope="module")
def tcp_target():
    """A TCP listener that accepts and closes connections: the endpoint checked."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    stopping = threading.Event()

    def serve():
        while not stopping.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stopping.set()
    thread.join(timeout=2)
    server.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    primary = make_instance(root, "primary", ENABLE_SYNC_API="true", INSTANCE_LOCATION=LOCATIONS["primary"])
    dependents = [
        # Candidates that wait 300 s before suspecting the primary: this
        # module is about riding out a primary's outage (test_failover.py
        # is about replacing it).
        make_instance(root, name, PRIMARY_SYNC_URL=primary.sync, INSTANCE_LOCATION=LOCATIONS[name],
                      FAILOVER_ORDER=str(order), FAILOVER_MAX_FAILURES=100)
        for order, name in enumerate(["dep-a", "dep-b"], start=1)
    ]
    instances = [primary, *dependents]
    try:
        for instance in instances:
            instance.start()
        yield {"primary": primary, "dep-a": dependents[0], "dep-b": dependents[1]}
    finally:
        # All asked at once, then each waited for: stopping takes seconds.
        for instance in instances:
            instance.terminate()
        for instance in instances:
            instance.stop()


def instances_on(primary):
    return {row[0]: row[1:] for row in primary.query(
        "SELECT name, id, location, status, role FROM monitoring_instances")}


def sync_token(dependent) -> str | None:
    """The dependent's token: stored encrypted under the instance's own
    generated key (secrets at rest), decrypted here with that key."""
    rows = dependent.query("SELECT value FROM instance_config WHERE key = 'sync_token'")
    if not rows:
        return None
    assert looks_encrypted(rows[0][0])
    return Fernet((dependent.data_dir / "secrets_key").read_text()).decrypt(rows[0][0].encode()).decode()


def test_dependents_register_and_get_a_token(cluster):
    primary = cluster["primary"]
    known = wait_until(lambda: len(rows := instances_on(primary)) == 3 and rows, 90,
                       lambda: f"dependents never registered; primary log:\n{primary.tail()}")
    assert {name: row[1] for name, row in known.items()} == LOCATIONS
    assert known["primary"][3] == "primary" and known["dep-a"][3] == "dependent"
    for name in ("dep-a", "dep-b"):
        dependent = cluster[name]
        # The primary lists a dependent as soon as it has registered it; the
        # dependent stores the token from the reply a moment later.
        token = wait_until(lambda: sync_token(dependent), 60,
                           lambda: f"{name} never stored its token; log:\n{dependent.tail()}")
        hashes = [row[0] for row in primary.query(
            "SELECT token_hash FROM instance_tokens WHERE instance_id = ? AND revoked_at IS NULL",
            (known[name][0],))]
        assert len(hashes) == 1 and token not in hashes  # only the hash is stored
        assert dependent.health()["role"] == "dependent"
        assert dependent.health()["instanceId"] == known[name][0]


def test_configuration_changes_reach_both_dependents(cluster, tcp_target):
    primary = cluster["primary"]
    created = requests.post(f"{primary.web}/api/v1/endpoints", auth=ADMIN, timeout=30, json={
        "name": "shared target", "checkType": "tcp", "target": "127.0.0.1", "port": tcp_target,
        "intervalSeconds": 5, "timeoutSeconds": 2,
    })
    assert created.status_code == 201, created.text
    endpoint_id = created.json()["id"]

    def names_on(instance):
        body = requests.get(f"{instance.web}/api/v1/endpoints", auth=ADMIN, timeout=5).json()
        return {e["id"]: e["name"] for e in body["endpoints"]}

    for name in ("dep-a", "dep-b"):
        wait_until(lambda: names_on(cluster[name]).get(endpoint_id) == "shared target", 60,
                   lambda: f"{name} never got the endpoint; log:\n{cluster[name].tail()}")

    renamed = requests.patch(f"{primary.web}/api/v1/endpoints/{endpoint_id}", auth=ADMIN, timeout=30,
                             json={"name": "renamed target"})
    assert renamed.status_code == 200
    for name in ("dep-a", "dep-b"):
        wait_until(lambda: names_on(cluster[name]).get(endpoint_id) == "renamed target", 60,
                   lambda: f"{name} never saw the rename; log:\n{cluster[name].tail()}")

    refused = requests.post(f"{cluster['dep-a'].web}/api/v1/endpoints", auth=ADMIN, timeout=30,
                            json={"name": "x", "checkType": "tcp", "target": "127.0.0.1", "port": 1})
    assert refused.status_code == 409
    assert primary.sync in refused.json()["message"]


def test_results_from_all_three_locations_reach_the_primary(cluster):
    primary = cluster["primary"]
    ids = instances_on(primary)

    def locations():
        rows = primary.query("SELECT instance_id, location, COUNT(*) FROM response_times GROUP BY 1, 2")
        return {(r[0], r[1]) for r in rows if r[2] >= 2}

    expected = {(ids[name][0], LOCATIONS[name]) for name in LOCATIONS}
    wait_until(lambda: locations() >= expected, 90,
               lambda: f"results missing; have {locations()}; primary log:\n{primary.tail()}")
    assert locations() == expected


@needs_chromium
def test_the_primary_shows_every_instance_live_in_a_browser(cluster, browser, tmp_path):
    from playwright.sync_api import expect

    primary = cluster["primary"]
    page = new_page(browser)
    page.goto(primary.web + "/login")
    page.fill("input[name=email]", ADMIN[0])
    page.fill("input[name=password]", ADMIN[1])
    page.click("button[type=submit]")
    page.click("nav >> text=Instances")
    rows = page.locator("tbody#instance-rows tr")
    expect(rows).to_have_count(3)
    for name, location in LOCATIONS.items():
        row = rows.filter(has_text=name)
        expect(row).to_contain_text(location)
        expect(row.locator(".badge")).to_have_text("Active")
    expect(rows.filter(has_text="primary")).to_contain_text("(this instance)")
    # The rows refresh in place: a dependent's heartbeat age restarts while
    # the page stays the same document.
    page.evaluate("window.__sameDocument = true")
    heartbeat = rows.filter(has_text="dep-a").locator("td.heartbeat")
    first = heartbeat.inner_text()
    page.wait_for_function(
        "([el, first]) => el.isConnected === false || el.innerText !== first",
        arg=[heartbeat.element_handle(), first], timeout=60_000)
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"

    # An endpoint's page shows the newest result from each location.
    endpoint_id = primary.query("SELECT id FROM endpoints ORDER BY id LIMIT 1")[0][0]
    page.goto(f"{primary.web}/endpoints/{endpoint_id}")
    locations = page.locator("section", has=page.get_by_role("heading", name="Locations")).locator("tbody tr")
    expect(locations).to_have_count(3)
    for location in LOCATIONS.values():
        expect(locations.filter(has_text=location).locator(".badge")).to_have_text("Up")


def own_results(dependent):
    own = dependent.health()["instanceId"]
    return own, {row[0] for row in dependent.query(
        "SELECT result_id FROM response_times WHERE instance_id = ?", (own,))}


def test_a_killed_primary_loses_nothing_and_stores_nothing_twice(cluster):
    primary = cluster["primary"]
    before = {name: len(own_results(cluster[name])[1]) for name in ("dep-a", "dep-b")}
    primary.kill()
    # The dependents keep checking with their last configuration.
    for name in ("dep-a", "dep-b"):
        wait_until(lambda: len(own_results(cluster[name])[1]) >= before[name] + 2, 60,
                   lambda: f"{name} stopped checking while the primary was down; "
                           f"log:\n{cluster[name].tail()}")
        pending = cluster[name].query("SELECT COUNT(*) FROM response_times WHERE synced_at IS NULL")[0][0]
        assert pending > 0  # results made during the outage wait in the outbox
    primary.start()

    def delivered(name):
        dependent = cluster[name]
        own, produced = own_results(dependent)
        unsent = dependent.query("SELECT COUNT(*) FROM response_times WHERE synced_at IS NULL")[0][0]
        stored = {row[0] for row in primary.query(
            "SELECT result_id FROM response_times WHERE instance_id = ?", (own,))}
        # Everything produced before this look is acknowledged and stored.
        return unsent == 0 and produced <= stored and (produced, stored)

    # Each failed round during the outage doubled the dependent's wait before
    # the next one (up to 60 s), so its first round after the restart may
    # come a minute later.
    for name in ("dep-a", "dep-b"):
        produced, stored = wait_until(lambda: delivered(name), 150,
                                      lambda: f"{name}'s outbox never drained; log:\n{cluster[name].tail()}")
        assert produced <= stored
    total, distinct = primary.query("SELECT COUNT(*), COUNT(DISTINCT result_id) FROM response_times")[0]
    assert total == distinct
    for name in ("dep-a", "dep-b"):
        dependent = cluster[name]
        own = dependent.health()["instanceId"]
        # Counted in this order, while checks go on: acknowledged on the
        # dependent <= stored on the primary <= produced by the dependent.
        acknowledged = dependent.query(
            "SELECT COUNT(*) FROM response_times WHERE instance_id = ? AND synced_at IS NOT NULL", (own,))[0][0]
        on_primary = primary.query("SELECT COUNT(*) FROM response_times WHERE instance_id = ?", (own,))[0][0]
        produced = len(own_results(dependent)[1])
        assert acknowledged <= on_primary <= produced


def test_a_restarted_dependent_keeps_its_identity(cluster):
    dependent = cluster["dep-b"]
    identity = dependent.health()["instanceId"]
    token = sync_token(dependent)
    dependent.kill()
    dependent.start()
    assert dependent.health()["instanceId"] == identity
    assert sync_token(dependent) == token
    assert len(instances_on(cluster["primary"])) == 3


def test_deleting_an_instance_revokes_its_token_at_once(cluster):
    primary, dependent = cluster["primary"], cluster["dep-a"]
    identity = dependent.health()["instanceId"]
    token = sync_token(dependent)
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{primary.sync}/sync/api/instances", headers=headers, timeout=30).status_code == 200
    assert requests.delete(f"{primary.sync}/sync/api/instances/{identity}", headers=headers,
                           timeout=30).status_code == 204
    assert requests.get(f"{primary.sync}/sync/api/instances", headers=headers, timeout=30).status_code == 401
    # The dependent still holds the join secret, so it registers again with a new token.
    fresh_token = wait_until(lambda: (new := sync_token(dependent)) not in (None, token) and new, 60,
                             lambda: f"the dependent did not register again; log:\n{dependent.tail()}")
    assert identity in {row[1][0] for row in instances_on(primary).items()}
    fresh = {"Authorization": f"Bearer {fresh_token}"}
    assert requests.get(f"{primary.sync}/sync/api/instances", headers=fresh, timeout=30).status_code == 200
    assert requests.get(f"{primary.sync}/sync/api/instances", headers=headers, timeout=30).status_code == 401
