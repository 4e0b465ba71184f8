"""The endpoint form in a real browser (Debian's Chromium through
Playwright), served by the app on a loopback port: what a person types is
what the server validates, and its message shows next to the field."""
from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from app.extensions import db
from app.models import Endpoint
from tests.peers.browser import browser, needs_chromium, new_page  # noqa: F401 - browser is a fixture
from tests.ui.conftest import EMAIL, PASSWORD, admin  # noqa: F401 - admin is a fixture

pytestmark = needs_chromium


@pytest.fixture
def live_app(app, admin):  # noqa: F811 - the fixture imported above
    """The test app served over HTTP on a loopback port; its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


def test_a_name_too_long_is_refused_not_cut_short(browser, live_app, app):  # noqa: F811
    from playwright.sync_api import expect

    page = new_page(browser)
    page.goto(f"{live_app}/login")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_app}/")
    page.goto(f"{live_app}/endpoints/new")
    page.fill("input[name=name]", "n" * 10_000)
    page.fill("input[name=target]", "http://127.0.0.1:9/")
    page.click("button:has-text('Add endpoint')")
    expect(page.locator("#err-name")).to_have_text("Name must be at most 200 characters (it has 10000)")
    assert page.locator("input[name=name]").input_value() == "n" * 10_000  # kept for correcting
    with app.app_context():
        assert db.session.execute(db.select(Endpoint)).first() is None
