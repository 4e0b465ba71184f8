"""The maintenance form in a real browser (Debian's Chromium through
Playwright), served by the app on a loopback port: a recurring window for a
group is added, a bad cron expression is refused beside its field, and the
list shows the window in progress."""
from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
from werkzeug.serving import make_server

from app.extensions import db
from app.models import MaintenanceWindow
from tests.peers.browser import browser, needs_chromium, new_page, screenshot  # noqa: F401 - browser is a fixture
from tests.ui.conftest import EMAIL, PASSWORD, admin, make_endpoint  # noqa: F401 - admin is a fixture

pytestmark = needs_chromium


@pytest.fixture
def live_app(app, admin):  # noqa: F811 - the fixture imported above
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


def test_a_recurring_window_is_added_and_shown_in_progress(browser, live_app, app, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    make_endpoint(app, name="Orders DB", group="Databases")
    make_endpoint(app, name="Shop")
    page = new_page(browser)
    page.goto(f"{live_app}/login")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_app}/")
    page.click("nav >> text=Maintenance")
    page.click("text=Add window")
    page.fill("input[name=title]", "Hourly vacuum")
    page.fill("textarea[name=description]", "Slow queries expected")
    page.check("input[name=kind][value=recurring]")
    page.fill("input[name=cronExpression]", "every hour")
    page.fill("input[name=durationMinutes]", "59")
    page.fill("input[name=timeZone]", "Europe/Berlin")
    page.check("input[name=groups][value=Databases]")
    page.click("button:has-text('Save')")
    expect(page.locator("#err-cronExpression")).to_contain_text("Cron expression is not a valid cron expression")
    with app.app_context():
        assert db.session.execute(db.select(MaintenanceWindow)).first() is None

    # Every hour at minute 0 for 59 minutes: in progress unless it is the last minute of the hour.
    page.fill("input[name=cronExpression]", "0 * * * *")
    page.click("button:has-text('Save')")
    page.wait_for_url(f"{live_app}/maintenance")
    row = page.locator("table.maintenance-windows tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Hourly vacuum")
    expect(row).to_contain_text("group Databases")
    if datetime.now(timezone.utc).minute < 58:
        expect(row.locator(".badge.maintenance")).to_have_text("in progress")
    screenshot(page, tmp_path, "maintenance.png")


def test_the_dashboard_and_the_status_page_show_maintenance(browser, live_app, app, tmp_path):  # noqa: F811
    from datetime import timedelta

    from playwright.sync_api import expect

    from app.services import maintenance, status_pages
    from tests.ui.conftest import add_result

    orders = make_endpoint(app, name="Orders DB", group="Databases")
    make_endpoint(app, name="Stock DB", group="Databases")
    add_result(app, orders, ok=False, reason="connection refused")
    now = datetime.now(timezone.utc)
    with app.app_context():
        status_pages.set_published("Databases", True)
        maintenance.create_window({"title": "Storage migration", "description": "Writes may be slow for a while.",
                                   "groups": ["Databases"], "startsAt": (now - timedelta(minutes=5)).isoformat(),
                                   "endsAt": (now + timedelta(hours=1)).isoformat()})
    page = new_page(browser)
    page.goto(f"{live_app}/login")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_app}/")
    expect(page.locator(f"#endpoint-{orders} .badge.maintenance")).to_have_text("Maintenance")
    page.goto(f"{live_app}/status/databases")
    expect(page.locator(".maintenance-notice")).to_contain_text("Maintenance in progress: Storage migration")
    expect(page.locator(".overall")).to_contain_text("Maintenance in progress")
    screenshot(page, tmp_path, "status-page-maintenance.png")
