"""The demo's dashboard in a real browser: ``python -m app demo`` started as
a user starts it, signed in with the credentials it printed, the checkout
endpoint PARTIAL beside endpoints UP. With SAVE_SCREENSHOTS=1 the page is
saved as docs/screenshots/demo.png."""
from __future__ import annotations

import re

from tests.peers.browser import browser, needs_chromium, new_page, screenshot  # noqa: F401 - browser is a fixture
from tests.peers.demo import DemoRun

pytestmark = needs_chromium


def test_the_demo_dashboard_shows_one_location_failing(browser, tmp_path, tmp_path_factory):
    from playwright.sync_api import expect

    # A short folder: the embedded Redis's socket path must fit in 100 bytes.
    folder = tmp_path_factory.mktemp("demo")
    run = DemoRun(folder)
    try:
        run.wait_ready()
        dashboard = run.shown("Dashboard")
        page = new_page(browser, viewport={"width": 1280, "height": 800})
        page.goto(dashboard)
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.fill("input[name=email]", run.shown("Email"))
        page.fill("input[name=password]", run.shown("Password"))
        page.click("button[type=submit]")
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

        rows = page.locator("tr")
        expect(rows.filter(has_text="Checkout API")).to_contain_text(re.compile("partial", re.IGNORECASE),
                                                                      timeout=90_000)
        others = ["Shop front page", "Search API", "Shop TCP port"]
        if "no ICMP here" not in run.output:
            others.append("Loopback ping")
        for name in others:
            expect(rows.filter(has_text=name)).to_contain_text(re.compile(r"\bup\b", re.IGNORECASE))
        expect(rows.filter(has_text="Checkout API")).to_contain_text("HTTP 503")
        screenshot(page, tmp_path, "demo.png")
    finally:
        run.kill_everything()
    assert run.process.returncode == 0, run.output
    assert list(folder.iterdir()) == []
