"""The instance manager in a real browser (Debian's Chromium through
Playwright) against three real instances on loopback:

    frankfurt  the primary, failover order 1
    singapore  dependent, failover order 2 (the other candidate)
    sydney     dependent, failover order 0 (never promotes)

The administrator changes singapore's failover order on the primary's
instances page (a live refresh meanwhile leaves the edit alone); the new
order is then in every member's own database, and sydney, which is no
candidate, lists it on its own instances page. The demote button's
confirmation says who takes over; dismissed, nothing changes. With SAVE_SCREENSHOTS=1 the page is saved as
docs/screenshots/instances.png.
"""
from __future__ import annotations

import pytest
import requests

from tests.peers.browser import browser, needs_chromium, new_page, screenshot  # noqa: F401 - browser is a fixture
from tests.peers.cluster import make_instance
from tests.peers.process import ADMIN, wait_until

pytestmark = needs_chromium

ORDERS = {"frankfurt": 1, "singapore": 2, "sydney": 0}
NEW_ORDER = 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("instance-manager")
    members = {"frankfurt": make_instance(root, "frankfurt", ENABLE_SYNC_API="true", INSTANCE_LOCATION="frankfurt",
                                          FAILOVER_ORDER=ORDERS["frankfurt"], WORKER_PROCESSES=1)}
    for name in ("singapore", "sydney"):
        members[name] = make_instance(root, name, PRIMARY_SYNC_URL=members["frankfurt"].sync, INSTANCE_LOCATION=name,
                                      FAILOVER_ORDER=ORDERS[name], WORKER_PROCESSES=1)
    try:
        members["frankfurt"].start()
        for name in ("singapore", "sydney"):
            members[name].launch()
        for name in ("singapore", "sydney"):
            members[name].wait_started()
        yield members
    finally:
        for instance in members.values():
            instance.terminate()
        for instance in members.values():
            instance.stop()
        left = [proc.pid for instance in members.values() for proc in instance.leftovers()]
        assert not left, f"processes outlived the cluster: {left}"


def orders(instance) -> dict[str, int]:
    """{member name: failover order} in the instance's own database."""
    return dict(instance.query("SELECT name, failover_order FROM monitoring_instances"))


def logs(cluster) -> str:
    return "\n".join(f"--- {name}:\n{instance.tail(2500)}" for name, instance in cluster.items())


def sign_in(page, instance) -> None:
    page.goto(instance.web + "/login?next=/instances")
    page.fill("input[name=email]", ADMIN[0])
    page.fill("input[name=password]", ADMIN[1])
    page.click("button[type=submit]")


def test_the_failover_order_changed_on_the_primary_reaches_every_member(cluster, browser, tmp_path):
    from playwright.sync_api import expect

    frankfurt, singapore, sydney = (cluster[name] for name in ("frankfurt", "singapore", "sydney"))
    # Everyone registered and holds the membership as the primary keeps it.
    for instance in cluster.values():
        wait_until(lambda: orders(instance) == ORDERS, 90,
                   lambda: f"{instance.name} holds {orders(instance)};\n{logs(cluster)}")
    # Something to check, so that results per minute show.
    created = requests.post(f"{frankfurt.web}/api/v1/endpoints", auth=ADMIN, timeout=30, json={
        "name": "sync health", "checkType": "http", "target": f"{frankfurt.sync}/sync/api/health",
        "intervalSeconds": 5, "timeoutSeconds": 2})
    assert created.status_code == 201, created.text

    page = new_page(browser, viewport={"width": 1600, "height": 800})
    sign_in(page, frankfurt)
    rows = page.locator("tbody#instance-rows tr")
    expect(rows).to_have_count(3)
    row = rows.filter(has_text="singapore")
    expect(row.locator("td.role")).to_have_text("dependent")
    expect(row.locator(".badge")).to_have_text("Active")
    expect(row.locator("td.lag")).to_contain_text("every 1 s")

    # The demote button says what would happen; dismissed, nothing does.
    said = []

    def dismiss(dialog):
        said.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    rows.filter(has_text="(this instance)").get_by_role("button", name="Demote").click()
    wait_until(lambda: said, 10, "no confirmation was asked for")
    assert said[0] == ("Demote: frankfurt stops being the primary; singapore (next in failover order) takes over "
                       "at epoch 1; alerts will come from singapore."), said[0]
    assert frankfurt.query("SELECT value FROM instance_config WHERE key = 'role'") == [("primary",)]

    # The administrator edits singapore's order in place.
    field = row.get_by_label("Failover order of singapore")
    expect(field).to_have_value(str(ORDERS["singapore"]))
    field.fill(str(NEW_ORDER))
    # A refresh of the rows meanwhile does not throw the edit away.
    page.evaluate("htmx.ajax('GET', '/instances', {source: '#instance-rows', target: '#instance-rows', "
                  "swap: 'innerHTML'})")
    page.wait_for_timeout(1000)
    expect(field).to_have_value(str(NEW_ORDER))
    row.get_by_role("button", name="Save").click()
    expect(page.locator(".flash.info")).to_contain_text(f"Failover order of “singapore” is now {NEW_ORDER} (was 2)")
    expect(rows.filter(has_text="singapore").get_by_label("Failover order of singapore")).to_have_value(
        str(NEW_ORDER))

    # Persisted by the primary, carried to every member, candidate or not.
    expected = {**ORDERS, "singapore": NEW_ORDER}
    for instance in cluster.values():
        wait_until(lambda: orders(instance) == expected, 60,
                   lambda: f"{instance.name} holds {orders(instance)};\n{logs(cluster)}")

    # Results per minute from the primary's stored results, each location's
    # (the rows refresh live), then the picture.
    for name in ORDERS:
        expect(rows.filter(has_text=name).locator("td.rate")).not_to_have_text("0.0", timeout=60_000)
    # Every member's heartbeat tells the primary it holds the new configuration.
    expect(rows.locator("td.config .warn")).to_have_count(0, timeout=60_000)
    screenshot(page, tmp_path, "instances.png")

    # Sydney, no candidate, lists the new order on its own instances page.
    other = new_page(browser)
    sign_in(other, sydney)
    member = other.locator("table.members tr").filter(has_text="singapore")
    expect(member.locator("td.order")).to_have_text(str(NEW_ORDER))
    expect(other.locator("table.members tr").filter(has_text="sydney")).to_contain_text("(this instance)")
