"""The UI in a real browser: Debian's Chromium driven by Playwright, against
the whole monitor started as a real process tree on loopback.

First-run setup, sign-in, adding an HTTP endpoint that points at a local
test server, watching it go UP, DOWN when the server stops and UP again
when it returns, all without reloading the page. With SAVE_SCREENSHOTS=1
the screenshots are written to docs/screenshots/ as well.
"""
from __future__ import annotations

import http.server
import threading

import pytest

from tests.peers.browser import browser, needs_chromium, new_page, screenshot  # noqa: F401 - browser is a fixture
from tests.peers.ports import reserve_port
from tests.peers.process import MonitorProcess, monitor_env

EMAIL, PASSWORD = "owner@example.org", "a long enough password"

pytestmark = needs_chromium


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        body = b"service is fine"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class TargetServer:
    """The endpoint being monitored: a loopback HTTP server that can be
    stopped (connection refused) and started again on the same port, which
    stays reserved meanwhile."""

    def __init__(self):
        self.port = reserve_port()
        self.server = None

    def start(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), _Ok)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/health"


@pytest.fixture
def target():
    server = TargetServer()
    server.start()
    yield server
    if server.server is not None:
        try:
            server.stop()
        except OSError:
            pass


@pytest.fixture
def monitor(tmp_path):
    """`python -m app start` with a fresh data dir and no users (first run)."""
    env = monitor_env(tmp_path / "data", INSTANCE_NAME="browser-test", INSTANCE_LOCATION="loopback")
    with MonitorProcess(env, tmp_path / "monitor.log") as running:
        yield running


def test_it_follows_an_endpoint_down_and_up_without_reloading(monitor, target, browser, tmp_path):
    from playwright.sync_api import expect

    base = monitor.web
    page = new_page(browser)

    # First run: every page leads to the one-time setup.
    page.goto(base + "/")
    expect(page).to_have_url(base + "/setup")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password_repeat]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    # Sign out and in again.
    page.click("text=Sign out")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    expect(page.locator(".flash.error")).to_contain_text("Wrong email or password")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    # Add an HTTP endpoint checked every 5 s.
    page.click("nav >> text=Add endpoint")
    page.fill("input[name=name]", "Local service")
    page.fill("input[name=target]", target.url)
    page.fill("input[name=opt_keyword]", "fine")
    page.fill("input[name=intervalSeconds]", "5")
    page.fill("input[name=timeoutSeconds]", "2")
    page.fill("input[name=group]", "Public")
    page.click("button:text('Add endpoint')")
    expect(page.get_by_role("heading", name="Local service")).to_be_visible()

    page.click("nav >> text=Dashboard")
    row = page.locator("tbody#endpoint-rows tr").filter(has_text="Local service")
    badge = row.locator(".badge")
    expect(badge).to_have_text("Up", timeout=60_000)
    # A marker that a reload would wipe out.
    page.evaluate("window.__sameDocument = true")

    target.stop()
    expect(badge).to_have_text("Down", timeout=60_000)
    expect(row.locator(".reason")).to_contain_text("127.0.0.1")
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    expect(page.locator("#status-summary")).to_contain_text("1 down")
    screenshot(page, tmp_path, "dashboard-down.png")

    target.start()
    expect(badge).to_have_text("Up", timeout=60_000)
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    expect(row.locator("td.num").nth(1)).to_contain_text("%")
    screenshot(page, tmp_path, "dashboard.png")

    # The detail page: incidents with the outage, check now inline.
    row.locator("a").first.click()
    expect(page.get_by_role("heading", name="Incidents")).to_be_visible()
    incidents = page.locator("table.list").first
    expect(incidents).to_contain_text("down")
    page.click("button:text('Check now')")
    expect(page.locator("#check-result .badge")).to_have_text("Up")
    screenshot(page, tmp_path, "endpoint-detail.png")

    # Dark mode follows the system setting.
    dark = new_page(browser, color_scheme="dark")
    dark.context.add_cookies(page.context.cookies())
    dark.goto(base + "/")
    expect(dark.locator("tbody#endpoint-rows .badge")).to_have_text("Up")
    background = dark.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background != "rgb(247, 247, 248)", background
    screenshot(dark, tmp_path, "dashboard-dark.png")

    # A phone-sized screen still shows status as colour and text.
    phone = new_page(browser, viewport={"width": 390, "height": 800})
    phone.context.add_cookies(page.context.cookies())
    phone.goto(base + "/")
    expect(phone.locator("tbody#endpoint-rows .badge")).to_have_text("Up")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the dashboard scrolls sideways on a phone ({width} px)"
