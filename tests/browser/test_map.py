"""The location map in a real browser, against a primary and two dependents
started as real process trees on loopback.

The primary stands where its location names (eu-central-1), one dependent at
its own coordinates, the other in a known region with a connectivity check
that fails (so its location is probe-offline). Every marker is on the map in
its health's colour, with its figures; when a dependent stops, its marker
turns inactive without a reload; and no request leaves the app. With
SAVE_SCREENSHOTS=1 the screenshot is written to docs/screenshots/map.png.
"""
from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

import pytest
import requests

from tests.peers.browser import browser, needs_chromium, new_page, screenshot  # noqa: F401 - browser is a fixture
from tests.peers.cluster import make_instance
from tests.peers.ports import reserve_port
from tests.peers.process import ADMIN, wait_until

pytestmark = needs_chromium

# The stylesheet's light colours: --up, --partial, --pending.
ACTIVE, PROBE_OFFLINE, INACTIVE = "rgb(19, 122, 58)", "rgb(180, 83, 10)", "rgb(138, 90, 0)"


@pytest.fixture
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


@pytest.fixture
def cluster(tmp_path):
    root = tmp_path / "cluster"
    primary = make_instance(root, "fra-1", ENABLE_SYNC_API="true", INSTANCE_LOCATION="eu-central-1")
    members = [
        make_instance(root, "iad-1", PRIMARY_SYNC_URL=primary.sync, INSTANCE_LOCATION="us-east",
                      INSTANCE_LATITUDE="39.04", INSTANCE_LONGITUDE="-77.49"),
        # Nothing listens on a reserved port: the connectivity check fails.
        make_instance(root, "sin-1", PRIMARY_SYNC_URL=primary.sync, INSTANCE_LOCATION="ap-southeast-1",
                      CONNECTIVITY_CHECK_TARGET=f"127.0.0.1:{reserve_port()}"),
    ]
    instances = [primary, *members]
    try:
        for instance in instances:
            instance.launch()
        for instance in instances:
            instance.wait_started()
        yield {instance.name: instance for instance in instances}
    finally:
        for instance in instances:
            instance.terminate()
        for instance in instances:
            instance.stop()


def _ids(primary) -> dict[str, str]:
    return {name: instance_id for instance_id, name in primary.query("SELECT id, name FROM monitoring_instances")}


def test_the_map_shows_each_instance_coloured_by_health_and_asks_nothing_of_elsewhere(cluster, tcp_target,
                                                                                      browser, tmp_path):
    from playwright.sync_api import expect

    primary = cluster["fra-1"]
    created = requests.post(f"{primary.web}/api/v1/endpoints", auth=ADMIN, timeout=30, json={
        "name": "shared target", "checkType": "tcp", "target": "127.0.0.1", "port": tcp_target,
        "intervalSeconds": 5, "timeoutSeconds": 2})
    assert created.status_code == 201, created.text
    ids = wait_until(lambda: len(found := _ids(primary)) == 3 and found, 90,
                     lambda: f"the dependents did not register; log:\n{primary.tail()}")
    wait_until(lambda: primary.query("SELECT COUNT(DISTINCT instance_id) FROM response_times")[0][0] == 3, 120,
               "results did not arrive from all three instances")
    wait_until(lambda: primary.query("SELECT offline_since FROM probe_states WHERE instance_id = ?",
                                     (ids["sin-1"],))[0][0], 120,
               lambda: f"sin-1's location did not go probe-offline; log:\n{primary.tail()}")

    page = new_page(browser)
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(primary.web + "/login")
    page.fill("input[name=email]", ADMIN[0])
    page.fill("input[name=password]", ADMIN[1])
    page.click("button[type=submit]")
    page.click("nav >> text=Map")
    expect(page.get_by_role("heading", name="Map")).to_be_visible()

    assert page.locator("svg.world .land path").count() > 150  # the countries, drawn by the server
    markers = page.locator("#map-markers g.marker")
    expect(markers).to_have_count(3)

    def marker(name):
        return page.locator(f"#marker-{ids[name]}")

    def fill(name):
        return marker(name).locator("circle").evaluate("circle => getComputedStyle(circle).fill")

    expect(marker("fra-1")).to_have_attribute("data-health", "active")
    expect(marker("iad-1")).to_have_attribute("data-health", "active")
    expect(marker("sin-1")).to_have_attribute("data-health", "probe-offline")
    assert (fill("fra-1"), fill("iad-1"), fill("sin-1")) == (ACTIVE, ACTIVE, PROBE_OFFLINE)
    # Where they are: Frankfurt and Singapore east of Virginia, Singapore south of both.
    boxes = {name: marker(name).locator("circle").bounding_box() for name in ("fra-1", "iad-1", "sin-1")}
    assert boxes["iad-1"]["x"] < boxes["fra-1"]["x"] < boxes["sin-1"]["x"]
    assert boxes["fra-1"]["y"] < boxes["iad-1"]["y"] < boxes["sin-1"]["y"]
    # Each marker's hover text: its figures over the last hour and day.
    wait_until(lambda: "ms on average" in marker("iad-1").locator("title").text_content(), 60,
               "no response times on the map", interval=2)
    title = marker("iad-1").locator("title").text_content()
    assert "iad-1 · us-east · Active" in title and "Last hour:" in title and "Last day:" in title
    regions = page.locator("#map-regions tbody tr")
    expect(regions).to_have_count(3)
    expect(regions.filter(has_text="ap-southeast-1")).to_contain_text("Singapore")
    expect(regions.filter(has_text="eu-central-1").locator("td.num").first).to_contain_text("ms")
    screenshot(page, tmp_path, "map.png")

    # On a phone the table goes below the map, and nothing is wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.locator("#map-regions").bounding_box()["y"] > page.locator("svg.world").bounding_box()["y"]
    page.set_viewport_size({"width": 1280, "height": 720})

    # A dependent stops: its marker turns inactive in place, no reload.
    page.evaluate("window.__sameDocument = true")
    cluster["sin-1"].stop()
    expect(marker("sin-1")).to_have_attribute("data-health", "inactive", timeout=90_000)
    assert fill("sin-1") == INACTIVE and fill("iad-1") == ACTIVE
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"

    origin = "{0.scheme}://{0.netloc}".format(urlsplit(primary.web))
    assert requested, "no requests seen"
    elsewhere = [url for url in requested if "{0.scheme}://{0.netloc}".format(urlsplit(url)) != origin]
    assert elsewhere == [], f"requests left the app: {elsewhere}"
    assert any(url.endswith("/map") for url in requested)
