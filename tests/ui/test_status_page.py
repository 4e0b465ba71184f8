"""The public status page: a title in words (or the one an administrator
gave it), content that refreshes itself, and each day coloured by its
uptime, which hovering shows."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from app.extensions import db
from app.services import status_pages
from tests.ui.conftest import make_endpoint, post


def record(app, endpoint_id, at: datetime, *, checks: int, failed: int) -> None:
    """``checks`` results a minute apart from ``at``, the first ``failed`` of them DOWN."""
    from app.checks import CheckResult
    from app.services import configuration
    from app.services.results import record_results

    with app.app_context():
        batch = []
        for n in range(checks):
            ok = n >= failed
            result = CheckResult(is_ok=ok, check_type="http", response_time_ms=10.0 if ok else None,
                                 failure_reason=None if ok else "connection refused", metadata={})
            result.checked_at = at + timedelta(minutes=n)
            batch.append((endpoint_id, result))
        record_results(batch, instance_id=configuration.instance_id(), location="lab")
        db.session.remove()


def publish(web, group: str):
    assert post(web, "/status-pages", {"group": group, "publish": "1"}).status_code == 303


def bars(html: str) -> list[tuple[str, str]]:
    """(level, label) of each day, oldest first."""
    return re.findall(r'class="bar (\w+)" role="listitem" tabindex="0" aria-label="([^"]*)"', html)


@pytest.mark.parametrize(("group", "title"), [
    ("payments-api", "Payments API"),
    ("eu_web_frontend", "EU Web Frontend"),
    ("Public site", "Public site"),
    ("Shop-EU", "Shop EU"),
])
def test_a_group_name_becomes_words(group, title):
    from app.services.status_pages import humanised

    assert humanised(group) == title


@pytest.mark.parametrize(("uptime", "level"), [
    (100.0, "good"), (99.9, "good"), (99.89, "fair"), (99.0, "fair"), (98.9, "poor"), (95.0, "poor"),
    (94.9, "bad"), (0.0, "bad"), (None, "none"),
])
def test_a_day_is_coloured_by_its_uptime(uptime, level):
    from app.services.status_pages import DayBar

    assert DayBar(datetime(2026, 1, 1).date(), uptime, 10 if uptime is not None else 0).level == level


def test_the_page_is_titled_in_words_with_status(web, app, client):
    make_endpoint(app, name="Checkout", group="payments-api")
    publish(web, "payments-api")
    html = client.get("/status/payments-api").get_data(as_text=True)
    assert "<h1>Payments API status</h1>" in html
    assert "<title>Payments API status · Endpoint monitor</title>" in html
    assert "<h1>payments-api</h1>" not in html


def test_an_administrator_gives_the_page_a_title(web, app, client):
    make_endpoint(app, name="Checkout", group="payments-api")
    publish(web, "payments-api")
    settings = web.get("/status-pages").get_data(as_text=True)
    assert 'placeholder="Payments API status"' in settings
    assert post(web, "/status-pages/title", {"group": "payments-api", "title": "  Acme   payments "}).status_code == 303
    assert "<h1>Acme payments</h1>" in client.get("/status/payments-api").get_data(as_text=True)

    refused = post(web, "/status-pages/title", {"group": "payments-api", "title": "x" * 101}, follow_redirects=True)
    assert "Title must be at most 100 characters (it has 101)." in refused.get_data(as_text=True)
    assert "<h1>Acme payments</h1>" in client.get("/status/payments-api").get_data(as_text=True)

    # Withdrawing and publishing again keeps the title; a blank one goes back to the default.
    assert post(web, "/status-pages", {"group": "payments-api", "publish": "0"}).status_code == 303
    publish(web, "payments-api")
    assert "<h1>Acme payments</h1>" in client.get("/status/payments-api").get_data(as_text=True)
    assert post(web, "/status-pages/title", {"group": "payments-api", "title": ""}).status_code == 303
    assert "<h1>Payments API status</h1>" in client.get("/status/payments-api").get_data(as_text=True)


def test_a_viewer_cannot_title_a_page(web, app):
    from tests.ui.test_viewers import viewer_client

    make_endpoint(app, name="Checkout", group="payments-api")
    viewer = viewer_client(app)
    refused = viewer.post("/status-pages/title", data={"csrf_token": viewer.token, "group": "payments-api",
                                                       "title": "Mine"})
    assert refused.status_code == 403
    with app.app_context():
        assert status_pages.configured_titles() == {}


def test_the_page_refreshes_its_content_by_itself(web, app, client):
    endpoint_id = make_endpoint(app, name="Checkout", group="payments-api")
    publish(web, "payments-api")
    record(app, endpoint_id, datetime.now(timezone.utc) - timedelta(minutes=3), checks=2, failed=0)
    page = client.get("/status/payments-api")
    html = page.get_data(as_text=True)
    poll = re.search(r'<section class="public" id="status-content"\s+hx-get="([^"]+)"\s+'
                     r'hx-trigger="every (\d+)s[^"]*"\s+hx-swap="outerHTML">', html)
    assert poll and poll.group(1) == "/status/payments-api" and int(poll.group(2)) <= 60
    assert "/static/vendor/htmx.js" in html
    assert "All systems operational" in html

    record(app, endpoint_id, datetime.now(timezone.utc) - timedelta(seconds=30), checks=1, failed=1)
    fragment = client.get("/status/payments-api", headers={"HX-Request": "true"})
    body = fragment.get_data(as_text=True)
    assert fragment.status_code == 200
    assert "<html" not in body
    assert 'id="status-content"' in body and "Some systems are down" in body
    assert "HX-Request" in fragment.headers["Vary"]
    assert fragment.headers["Cache-Control"] == f"public, max-age={poll.group(2)}"
    assert "Set-Cookie" not in fragment.headers


def test_each_day_shows_its_uptime_and_a_short_outage_does_not_make_it_red(web, app, client):
    endpoint_id = make_endpoint(app, name="Checkout", group="payments-api")
    publish(web, "payments-api")
    noon = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
    record(app, endpoint_id, noon - timedelta(days=1), checks=600, failed=1)   # 99.83 %: one short outage
    record(app, endpoint_id, noon - timedelta(days=2), checks=40, failed=1)    # 97.50 %
    record(app, endpoint_id, noon - timedelta(days=3), checks=10, failed=5)    # 50 %
    record(app, endpoint_id, noon - timedelta(days=4), checks=300, failed=0)   # 100 %
    html = client.get("/status/payments-api").get_data(as_text=True)
    days = bars(html)
    assert len(days) == status_pages.DAYS
    today_and_before = days[-5:]
    four, three, two, one = today_and_before[:4]
    assert four[0] == "good" and "100.00 % up (all 300 checks passed)" in four[1]
    assert three[0] == "bad" and "50.00 % up (5 of 10 checks failed)" in three[1]
    assert two[0] == "poor" and "97.50 % up (1 of 40 checks failed)" in two[1]
    assert one[0] == "fair" and "99.83 % up (1 of 600 checks failed)" in one[1]
    assert days[0] == ("none", days[0][1]) and days[0][1].endswith(": no data")
    expected_day = (noon - timedelta(days=2)).strftime("%a %d %b %Y")
    assert two[1].startswith(expected_day)

