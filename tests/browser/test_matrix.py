"""The dashboard's matrix of locations in a real browser (Debian's Chromium
through Playwright), against three real instances: a primary (frankfurt)
and a dependent (virginia) on this host, and a dependent (singapore)
inside a network namespace of the test's own, joined to the host by a
veth pair.

A real HTTP server on the host's end of the pair answers 502 on /a to
singapore alone, so /a is PARTIAL: the matrix shows singapore's cell DOWN,
the others UP with their response times, "2 of 3 up", and the heartbeat
bar holds singapore's failures. Then the layout: a 200-character name
wraps instead of widening the page, and at 390 px nothing overflows.
With SAVE_SCREENSHOTS=1 the matrix is written to docs/screenshots/.

Needs root and ``ip`` (the module is skipped otherwise). Traffic stays on
loopback and on the veth pair the test made.
"""
from __future__ import annotations

import re

import pytest
import requests

from tests.peers.browser import browser, needs_chromium, new_page, screenshot  # noqa: F401 - browser is a fixture
from tests.peers.cluster import make_instance
from tests.peers.netns import Namespace, unavailable
from tests.peers.process import ADMIN, wait_until

if (why := unavailable()) is not None:
    pytest.skip(f"matrix browser test skipped: {why}", allow_module_level=True)

from tests.cluster.test_consensus import Target, logs, own_id  # noqa: E402 - needs the skip above first

pytestmark = needs_chromium

LOCATIONS = {"primary": "frankfurt", "dep-a": "virginia", "dep-ns": "singapore"}
PATHS = ("/a", "/b", "/c")
INTERVAL = 5
# No space or hyphen: nothing a browser would break the line at by itself.
LONG_NAME = ("checkoutservice" * 14)[:200]
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def network():
    namespace = Namespace("montest-matrix").create()
    try:
        yield namespace
    finally:
        namespace.delete()


@pytest.fixture(scope="module")
def target(network):
    server = Target(network.host_address, lone_client=network.ns_address).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, network):
    root = tmp_path_factory.mktemp("matrix")
    primary = make_instance(root, "primary", host=network.host_address, ENABLE_SYNC_API="true",
                            INSTANCE_LOCATION=LOCATIONS["primary"])
    dep_a = make_instance(root, "dep-a", PRIMARY_SYNC_URL=primary.sync, INSTANCE_LOCATION=LOCATIONS["dep-a"])
    dep_ns = make_instance(root, "dep-ns", host=network.ns_address, command_prefix=network.exec_prefix,
                           PRIMARY_SYNC_URL=primary.sync, INSTANCE_LOCATION=LOCATIONS["dep-ns"])
    instances = [primary, dep_a, dep_ns]
    try:
        for instance in instances:
            instance.start()
        yield {"primary": primary, "dep-a": dep_a, "dep-ns": dep_ns}
    finally:
        for instance in instances:
            instance.terminate()
        for instance in instances:
            instance.stop()
        left = [proc.pid for instance in instances for proc in instance.leftovers()]
        assert not left, f"processes outlived the cluster: {left}"


def create_endpoint(primary, name: str, url: str) -> int:
    created = requests.post(f"{primary.web}/api/v1/endpoints", auth=ADMIN, headers=JSON, timeout=30, json={
        "name": name, "checkType": "http", "target": url, "intervalSeconds": INTERVAL, "timeoutSeconds": 2,
        "failureThreshold": 1, "successThreshold": 1})
    assert created.status_code == 201, created.text
    return created.json()["id"]


@pytest.fixture(scope="module")
def monitored(cluster, target):
    """The endpoints, made on the primary once both dependents are registered: {path: id}."""
    primary = cluster["primary"]
    wait_until(lambda: len(primary.query("SELECT id FROM monitoring_instances")) == 3, 90,
               lambda: f"the dependents never registered;\n{logs(cluster, 'primary', 'dep-a', 'dep-ns')}")
    return {path: create_endpoint(primary, f"target {path}", target.url(path)) for path in PATHS}


@pytest.fixture(scope="module")
def long_named(cluster, monitored, target) -> int:
    """An endpoint with a 200-character name (the longest there may be)."""
    return create_endpoint(cluster["primary"], LONG_NAME, target.url("/b"))


def signed_in_page(browser, primary, **options):
    from playwright.sync_api import expect

    page = new_page(browser, **options)
    page.goto(primary.web + "/login")
    page.fill("input[name=email]", ADMIN[0])
    page.fill("input[name=password]", ADMIN[1])
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    return page


def test_the_matrix_shows_one_location_failing_as_partial_with_its_heartbeats(cluster, monitored, browser,
                                                                              tmp_path):
    from playwright.sync_api import expect

    primary = cluster["primary"]
    ids = {name: own_id(cluster[name]) for name in LOCATIONS}
    page = signed_in_page(browser, primary)
    row = page.locator(f"#endpoint-{monitored['/a']}")
    # Live: the page is not reloaded while the locations report.
    page.evaluate("window.__sameDocument = true")
    expect(row.locator(".badge")).to_have_text("Partial", timeout=120_000)
    expect(row.locator("td.consensus")).to_contain_text("2 of 3 up")

    heads = page.locator("th.loc")
    expect(heads).to_have_count(3)
    assert [heads.nth(n).get_attribute("data-location") for n in range(3)] == [
        ids["primary"], ids["dep-ns"], ids["dep-a"]]  # this instance first, then by location
    expect(heads.nth(0)).to_contain_text("frankfurt")

    singapore = row.locator(f'td.cell[data-location="{ids["dep-ns"]}"]')
    expect(singapore).to_have_class("num cell down")
    expect(singapore).to_have_text("Down")
    assert "HTTP 502" in singapore.get_attribute("title")
    for name in ("primary", "dep-a"):
        cell = row.locator(f'td.cell[data-location="{ids[name]}"]')
        expect(cell).to_have_class("num cell up")
        expect(cell).to_have_text(re.compile(r"^\d+ ms$"))

    # Every other endpoint is UP everywhere.
    for path in PATHS[1:]:
        other = page.locator(f"#endpoint-{monitored[path]}")
        expect(other.locator(".badge")).to_have_text("Up")
        expect(other.locator("td.consensus")).to_contain_text("3 of 3 up")
        expect(other.locator("td.cell.up")).to_have_count(3)

    # The heartbeat bar: singapore's failures among the others' successes,
    # each titled with its time, location and outcome.
    wait_until(lambda: row.locator(".beat.down").count() >= 3 and row.locator(".beat.up").count() >= 6, 60,
               "the heartbeat bar never filled", interval=1)
    failed = row.locator(".beat.down").first.get_attribute("title")
    assert " UTC · singapore · down: HTTP 502" in failed, failed
    passed = [row.locator(".beat.up").nth(n).get_attribute("title") for n in range(row.locator(".beat.up").count())]
    assert {title.split(" · ")[1] for title in passed} == {"frankfurt", "virginia"}, passed
    assert row.locator(".beat").count() == 40
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"

    # Filtering by a location's status finds the one endpoint it fails for.
    page.select_option("select[name=status]", "DOWN")
    page.select_option("select[name=location]", ids["dep-ns"])
    expect(page).to_have_url(re.compile(f"status=DOWN&location={ids['dep-ns']}"))
    expect(page.locator("tbody#endpoint-rows tr[id^=endpoint-]")).to_have_count(1)
    expect(page.locator(f"#endpoint-{monitored['/a']}")).to_be_visible()
    page.goto(primary.web + "/")
    expect(page.locator(f"#endpoint-{monitored['/a']} .beat.down").first).to_be_attached()
    screenshot(page, tmp_path, "matrix.png")


def test_a_long_name_wraps_instead_of_widening_the_page(cluster, long_named, browser):
    from playwright.sync_api import expect

    page = signed_in_page(browser, cluster["primary"])
    name = page.locator(f"#endpoint-{long_named} td.name")
    expect(name).to_contain_text(LONG_NAME)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"the page is {width} px wide for a 1280 px window"
    box = name.locator("a").bounding_box()
    assert box["x"] + box["width"] <= 1280 and box["height"] > 40, f"the name is not wrapped: {box}"


def test_at_390_px_the_dashboard_does_not_overflow(cluster, monitored, long_named, browser):
    from playwright.sync_api import expect

    page = signed_in_page(browser, cluster["primary"], viewport={"width": 390, "height": 844})
    expect(page.locator(f"#endpoint-{monitored['/a']}")).to_be_visible()
    expect(page.locator(f"#endpoint-{long_named}")).to_be_attached()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the dashboard is {width} px wide in a 390 px window"
