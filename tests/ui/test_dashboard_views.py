"""The dashboard, the endpoint detail page and public status pages, through
the test client: content, filters, live-refresh fragments, query counts."""
import re
from datetime import timedelta

import pytest
from sqlalchemy import event

from app.extensions import db
from app.models import utcnow
from tests.ui.conftest import add_result, make_endpoint, post

CERT = {"certificateInfo": {"subject": "CN=secure.test", "issuer": "CN=Test CA", "validFrom": "2026-01-01T00:00:00+00:00",
                            "validTo": "2027-01-01T00:00:00+00:00", "daysRemaining": 9, "serialNumber": "abc123"}}


def _row(html, endpoint_id):
    match = re.search(rf'<tr id="endpoint-{endpoint_id}".*?</tr>', html, re.S)
    assert match, f"no row for endpoint {endpoint_id}"
    return match.group(0)


def test_it_shows_each_endpoint_with_status_response_time_uptime_sparkline_and_certificate(web, app):
    up = make_endpoint(app, name="Secure", target="https://secure.test/")
    down = make_endpoint(app, name="Broken")
    now = utcnow()
    for minutes in (50, 30, 10):
        add_result(app, up, ms=20.0, at=now - timedelta(minutes=minutes))
    add_result(app, up, ms=40.0, metadata=CERT)
    add_result(app, down, ok=False, reason="connection refused by 127.0.0.1:9")
    html = web.get("/").get_data(as_text=True)
    secure = _row(html, up)
    assert ">Up</span>" in secure and "40 ms" in secure and "100.00 %" in secure
    assert "<polyline" in secure or "<circle" in secure
    assert 'class="warn">9 d</span>' in secure
    broken = _row(html, down)
    assert ">Down</span>" in broken and "connection refused by 127.0.0.1:9" in broken and "0.00 %" in broken
    assert "1 up" in html and "1 down" in html


def test_it_filters_by_status_and_search(web, app):
    up = make_endpoint(app, name="Alpha api")
    down = make_endpoint(app, name="Beta db", group="Databases")
    add_result(app, up)
    add_result(app, down, ok=False, reason="nope")
    only_down = web.get("/?status=DOWN").get_data(as_text=True)
    assert f'id="endpoint-{down}"' in only_down and f'id="endpoint-{up}"' not in only_down
    searched = web.get("/?q=databases").get_data(as_text=True)
    assert f'id="endpoint-{down}"' in searched and f'id="endpoint-{up}"' not in searched
    fragment = web.get("/?q=alpha", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in fragment and f'id="endpoint-{up}"' in fragment
    assert 'id="status-summary" hx-swap-oob="true"' in fragment
    assert "No endpoint matches this filter." in web.get("/?q=nothing-like-this").get_data(as_text=True)


def _poll_url(html):
    url = re.search(r'id="dashboard-poll"[^>]*hx-get="([^"]+)"', html, re.S).group(1)
    return url.replace("&amp;", "&")


@pytest.fixture
def no_overlap(monkeypatch):
    """Rows changed just before a render are normally sent once more; not here."""
    from app.services import dashboard

    monkeypatch.setattr(dashboard, "CHANGE_OVERLAP", timedelta(0))


def test_the_poll_answers_204_while_nothing_changed(web, app, no_overlap):
    endpoint_id = make_endpoint(app)
    add_result(app, endpoint_id)
    poll = _poll_url(web.get("/").get_data(as_text=True))
    response = web.get(poll, headers={"HX-Request": "true"})
    assert response.status_code == 204 and response.data == b""


def test_the_poll_sends_only_the_rows_that_changed(web, app, no_overlap):
    quiet = make_endpoint(app, name="Quiet")
    busy = make_endpoint(app, name="Busy")
    add_result(app, quiet)
    poll = _poll_url(web.get("/").get_data(as_text=True))
    add_result(app, busy, ok=False, reason="refused")
    response = web.get(poll, headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert f'<tr id="endpoint-{busy}"' in html and f'id="endpoint-{quiet}"' not in html
    assert 'hx-swap-oob="true"' in _row(html, busy) and ">Down</span>" in html
    assert 'id="dashboard-poll" hidden hx-swap-oob="true"' in html  # the poller moves on
    assert "1 down" in html


def test_the_poll_resends_the_table_when_the_set_of_rows_changed(web, app):
    make_endpoint(app, name="First")
    poll = _poll_url(web.get("/").get_data(as_text=True))
    second = make_endpoint(app, name="Second")
    html = web.get(poll, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert '<div id="dashboard-table" hx-swap-oob="true">' in html and f'id="endpoint-{second}"' in html


def test_the_poll_sends_rows_changed_just_before_the_render_again(web, app):
    endpoint_id = make_endpoint(app)
    add_result(app, endpoint_id)
    poll = _poll_url(web.get("/").get_data(as_text=True))
    # A result committed while the page was being rendered must not be missed.
    html = web.get(poll, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert f'<tr id="endpoint-{endpoint_id}"' in html


def test_a_signed_out_poll_is_sent_to_sign_in(app, web):
    poll = _poll_url(web.get("/").get_data(as_text=True))
    other = app.test_client()
    response = other.get(poll, headers={"HX-Request": "true"})
    assert response.status_code == 401 and response.headers["HX-Redirect"].startswith("/login")


def test_the_row_version_changes_only_with_what_the_row_shows(app):
    from app.services import dashboard

    endpoint_id = make_endpoint(app)
    add_result(app, endpoint_id, ms=10.0)
    with app.app_context():
        first = dashboard.endpoint_rows()
        dashboard.add_history(first)
        again = dashboard.endpoint_rows()
        dashboard.add_history(again)
        assert first[0].version == again[0].version
    add_result(app, endpoint_id, ms=99.0)
    with app.app_context():
        later = dashboard.endpoint_rows()
        dashboard.add_history(later)
        assert later[0].version != first[0].version


def _queries_for_dashboard(app, client) -> int:
    statements = []

    def count_statement(conn, cursor, statement, *args):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count_statement)
    try:
        assert client.get("/").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count_statement)
    return len(statements)


def test_the_dashboard_reads_a_fixed_number_of_queries_whatever_the_endpoints(app, web):
    def add(names):
        for name in names:
            endpoint_id = make_endpoint(app, name=name, target=f"https://{name}.test/")
            add_result(app, endpoint_id, metadata=CERT)
        web.get("/")  # let roll-ups settle

    add([f"a{n}" for n in range(3)])
    few = _queries_for_dashboard(app, web)
    add([f"b{n}" for n in range(30)])
    many = _queries_for_dashboard(app, web)
    assert few == many <= 12


def test_the_detail_page_shows_chart_uptime_incidents_failures_and_certificate(web, app):
    endpoint_id = make_endpoint(app, name="Secure", target="https://secure.test/")
    now = utcnow()
    add_result(app, endpoint_id, ms=15.0, at=now - timedelta(minutes=20))
    add_result(app, endpoint_id, ok=False, reason="HTTP 503", at=now - timedelta(minutes=10))
    add_result(app, endpoint_id, ms=25.0, metadata=CERT, at=now - timedelta(minutes=5))
    html = web.get(f"/endpoints/{endpoint_id}").get_data(as_text=True)
    assert '<svg class="chart"' in html and 'class="fail"' in html
    assert "66.67 %" in html  # 2 of 3 checks passed
    incidents = re.search(r"<h2>Incidents</h2>.*?</table>", html, re.S).group(0)
    assert incidents.count("<tr>") == 4  # header + pending→up, up→down, down→up
    assert "5 min" in incidents and "(ongoing)" in incidents and "HTTP 503" in incidents
    assert "HTTP 503" in re.search(r"<h2>Recent failures</h2>.*?</table>", html, re.S).group(0)
    assert "CN=secure.test" in html and "9 days left" in html


@pytest.mark.parametrize("range_key", ["1h", "24h", "7d", "30d"])
def test_the_chart_covers_each_range(web, app, range_key):
    endpoint_id = make_endpoint(app)
    add_result(app, endpoint_id, ms=30.0, at=utcnow() - timedelta(minutes=30))
    fragment = web.get(f"/endpoints/{endpoint_id}?range={range_key}&part=chart",
                       headers={"HX-Request": "true"}).get_data(as_text=True)
    assert fragment.startswith('<div id="chart-panel">') and "<svg" in fragment
    assert f'range={range_key}" aria-current="true"' in fragment.replace("&amp;", "&") or \
        re.search(rf'range={range_key}[^>]*aria-current="true"', fragment.replace("&amp;", "&"), re.S)
    assert "<polyline" in fragment or "<circle" in fragment


def test_the_detail_status_poll_answers_204_then_new_status_then_286_when_deleted(web, app):
    endpoint_id = make_endpoint(app)
    html = web.get(f"/endpoints/{endpoint_id}").get_data(as_text=True)
    poll = re.search(r'id="endpoint-status"[^>]*hx-get="([^"]+)"', html, re.S).group(1).replace("&amp;", "&")
    assert web.get(poll, headers={"HX-Request": "true"}).status_code == 204
    add_result(app, endpoint_id, ok=False, reason="refused")
    changed = web.get(poll, headers={"HX-Request": "true"})
    assert changed.status_code == 200 and ">Down</span>" in changed.get_data(as_text=True)
    post(web, f"/endpoints/{endpoint_id}/delete")
    gone = web.get(poll, headers={"HX-Request": "true"})
    assert gone.status_code == 286 and "deleted" in gone.get_data(as_text=True)


def test_a_status_page_is_public_only_once_published(web, app):
    endpoint_id = make_endpoint(app, name="Website", group="Public site")
    make_endpoint(app, name="Internal", group="Ops")
    add_result(app, endpoint_id)
    anonymous = app.test_client()
    assert anonymous.get("/status/public-site").status_code == 404
    assert post(web, "/status-pages", {"group": "Public site", "publish": "1"}).status_code == 303
    page = anonymous.get("/status/public-site")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Website" in html and "Internal" not in html
    assert html.count('class="bar ') == 90 and 'class="bar good"' in html
    assert "All systems operational" in html and "public, max-age=30" in page.headers["Cache-Control"]
    assert "csrf-token" not in html and "Sign out" not in html
    # Cached as public: the same for a signed-in visitor, and no cookie.
    signed_in = web.get("/status/public-site")
    assert "Sign out" not in signed_in.get_data(as_text=True) and "Set-Cookie" not in signed_in.headers
    assert "Cookie" not in signed_in.headers.get("Vary", "")
    assert post(web, "/status-pages", {"group": "Public site", "publish": "0"}).status_code == 303
    assert anonymous.get("/status/public-site").status_code == 404


def test_publishing_an_unknown_group_is_refused(web):
    response = post(web, "/status-pages", {"group": "Nope", "publish": "1"})
    assert response.status_code == 303
    assert "There is no endpoint group named" in web.get("/status-pages").get_data(as_text=True)
