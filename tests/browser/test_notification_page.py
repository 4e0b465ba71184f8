"""The notifications page in Chromium, served by a real HTTP server on
loopback: the deliveries tables' cells line up with their headers, and
"Send test" adds the test to Recent deliveries without a reload."""
from __future__ import annotations

import threading
import uuid

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server

from app.extensions import db
from app.models import NotificationDelivery, utcnow
from app.notifiers.base import AlertMessage
from tests.peers.browser import browser, needs_chromium, new_page, screenshot  # noqa: F401 - browser is a fixture
from tests.ui.conftest import EMAIL, PASSWORD, admin, make_endpoint  # noqa: F401 - admin is a fixture

pytestmark = needs_chromium

LONG_ERROR = "HTTP 500 from the hook: " + "the receiving service answered with an error page " * 3


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args):
        pass


@pytest.fixture
def site(app, admin, httpserver):
    """The app on loopback with one webhook service, an endpoint and two of its alerts."""
    from app.services import notifications

    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    with app.app_context():
        service = notifications.create_service({"name": "Ops hook", "kind": "webhook",
                                                "config": {"url": httpserver.url_for("/hook")},
                                                "isEnabled": True})
        service_id = service.id
    endpoint_id = make_endpoint(app, name="Checkout API")
    with app.app_context():
        for status, error in (("sent", None), ("failed", LONG_ERROR)):
            message = AlertMessage(event="down", endpoint_id=endpoint_id, endpoint_name="Checkout API",
                                   target="http://127.0.0.1:9/", check_type="http", status="DOWN",
                                   previous_status="UP", occurred_at=utcnow(), reason="connection refused")
            db.session.add(NotificationDelivery(notification_service_id=service_id, endpoint_id=endpoint_id,
                                                event="down", status=status, dedupe_key=f"b:{uuid.uuid4()}",
                                                payload=message.to_payload(), attempts=1, last_error=error,
                                                created_at=utcnow()))
        db.session.commit()
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


def misaligned_cells(page, table_selector: str) -> list[str]:
    """Cells whose left or right edge is not that of their column's header,
    or whose top or bottom edge (where the row's border is drawn) is not
    that of their row."""
    return page.eval_on_selector(table_selector, """table => {
        const heads = [...table.querySelectorAll('thead th')].map(th => th.getBoundingClientRect());
        const wrong = [];
        table.querySelectorAll('tbody tr').forEach((tr, r) => {
            const cells = [...tr.children];
            if (cells.length !== heads.length) wrong.push(`row ${r}: ${cells.length} cells, ${heads.length} headers`);
            const line = tr.getBoundingClientRect();
            cells.forEach((td, c) => {
                const box = td.getBoundingClientRect(), head = heads[c];
                if (Math.abs(box.top - line.top) > 1 || Math.abs(box.bottom - line.bottom) > 1)
                    wrong.push(`row ${r} cell ${c}: ${box.top}-${box.bottom} in a row at ${line.top}-${line.bottom}`);
                if (!head || Math.abs(box.left - head.left) > 1 || Math.abs(box.right - head.right) > 1)
                    wrong.push(`row ${r} cell ${c}: ${box.left}-${box.right} under ${head && head.left}-${head && head.right}`);
            });
        });
        return wrong;
    }""")


def test_deliveries_line_up_and_a_test_shows_without_a_reload(site, browser, tmp_path):
    from playwright.sync_api import expect

    page = new_page(browser)
    page.goto(site + "/login")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.goto(site + "/notifications")
    for heading in ("Notification services", "Failed deliveries", "Recent deliveries"):
        table = f"section:has(:is(h1, h2):text-is('{heading}')) table"
        assert misaligned_cells(page, table) == [], heading
    recent = page.locator("#recent-deliveries tbody tr")
    expect(recent).to_have_count(2)
    expect(recent.first.locator("a", has_text="Checkout API")).to_have_attribute("href", "/endpoints/1")

    page.evaluate("window.notReloaded = true")
    page.click("text=Send test")
    expect(page.locator("#test-1")).to_contain_text("Test message sent.")
    expect(recent).to_have_count(3)
    expect(recent.first).to_contain_text("test")
    expect(recent.first.locator(".delivery.sent")).to_be_visible()
    assert page.evaluate("window.notReloaded") is True
    assert misaligned_cells(page, "#recent-deliveries table") == []
    screenshot(page, tmp_path, "notifications.png")
