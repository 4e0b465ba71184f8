"""The dashboard, the endpoint detail page and public status pages, through
the test client: the matrix of locations, sorting, grouping, filters,
pages, heartbeat bars, live-refresh fragments, query counts."""
import re
from datetime import timedelta

import pytest
from sqlalchemy import event

from app.extensions import db
from app.models import LocationStatus, utcnow
from tests.conftest import SECRET, instance_app, make_app
from tests.integration.test_consensus_on_a_primary import DEPENDENTS, Cluster
from tests.ui.conftest import EMAIL, PASSWORD, add_result, csrf_token, make_endpoint, post, sign_in

CERT = {"certificateInfo": {"subject": "CN=secure.test", "issuer": "CN=Test CA", "validFrom": "2026-01-01T00:00:00+00:00",
                            "validTo": "2027-01-01T00:00:00+00:00", "daysRemaining": 9, "serialNumber": "abc123"}}
PRIMARY_ENV = {"ENABLE_SYNC_API": "true", "SYNC_SHARED_SECRET": SECRET, "INSTANCE_NAME": "fra-1",
               "INSTANCE_LOCATION": "frankfurt", "HEARTBEAT_INTERVAL": "5"}


def _row(html, endpoint_id):
    match = re.search(rf'<tr id="endpoint-{endpoint_id}".*?</tr>', html, re.S)
    assert match, f"no row for endpoint {endpoint_id}"
    return match.group(0)


def _cells(row_html) -> dict[str, tuple[str, str]]:
    """{instance id: (cell class, text)} of a row."""
    return {instance: (kind, re.sub(r"<[^>]+>", "", text).strip()) for kind, instance, text in re.findall(
        r'<td class="num cell (\w+)" data-location="([^"]+)"[^>]*>(.*?)</td>', row_html, re.S)}


def _listed(html) -> list[int]:
    return [int(n) for n in re.findall(r'<tr id="endpoint-(\d+)"', html)]


# --- a primary with two dependents ---------------------------------------------------


@pytest.fixture
def primary(tmp_path, migrated_sqlite_template):
    """A primary's sync API (with two registered dependents, as ``Cluster``)
    and its web app on the same database, the admin signed in."""
    from app.services.accounts import create_user
    from app.services.sync import primary as primary_service

    sync_app = instance_app(tmp_path, migrated_sqlite_template, PRIMARY_ENV, serve="sync")
    web_app = make_app(tmp_path, PRIMARY_ENV, serve="web")
    with web_app.app_context():
        primary_service.register_self()
        create_user(EMAIL, PASSWORD, is_admin=True)
    cluster = Cluster(sync_app)
    web = web_app.test_client()
    assert sign_in(web).status_code == 302
    web.token = csrf_token(web, "/")
    cluster.web, cluster.web_app = web, web_app
    yield cluster
    for application in (web_app, sync_app):
        with application.app_context():
            db.session.remove()
            db.engine.dispose()


def _own_id(app) -> str:
    from app.services import configuration

    with app.app_context():
        return configuration.instance_id()


def test_a_primary_shows_a_cell_per_location_then_the_consensus(primary):
    endpoint = primary.endpoint(name="Checkout")
    primary.own(endpoint, True)
    primary.beat("virginia", [(endpoint, True)])
    primary.beat("singapore", [(endpoint, False)])
    html = primary.web.get("/").get_data(as_text=True)
    own = _own_id(primary.app)
    # One column per location, this instance first.
    heads = re.findall(r'<th scope="col" class="loc" data-location="([^"]+)">(\w+)', html)
    assert heads == [(own, "frankfurt"), (DEPENDENTS["singapore"], "singapore"), (DEPENDENTS["virginia"], "virginia")]
    row = _row(html, endpoint)
    assert _cells(row) == {own: ("up", "10 ms"), DEPENDENTS["virginia"]: ("up", "20 ms"),
                           DEPENDENTS["singapore"]: ("down", "Down")}
    assert 'title="singapore: DOWN at ' in row and ": timeout" in row
    consensus = re.search(r'<td class="consensus">(.*?)</td>', row, re.S).group(1)
    assert ">Partial</span>" in consensus and "2 of 3 up" in consensus
    assert "100.00 %" in row  # PARTIAL is reachable: consensus uptime counts it up


def test_a_stale_location_is_grey_with_its_age_and_a_probe_offline_one_is_marked(primary):
    endpoints = [primary.endpoint(name=f"e{n}") for n in range(4)]
    for endpoint in endpoints:
        primary.own(endpoint, True)
        primary.beat("virginia", [(endpoint, True)])
    primary.beat("singapore", [(endpoint, False) for endpoint in endpoints])  # sees everything down: offline
    with primary.app.app_context():
        state = db.session.get(LocationStatus, (endpoints[0], DEPENDENTS["virginia"]))
        state.last_checked_at = utcnow() - timedelta(minutes=12)
        db.session.commit()
    html = primary.web.get("/").get_data(as_text=True)
    cells = _cells(_row(html, endpoints[0]))
    assert cells[DEPENDENTS["virginia"]] == ("stale", "12 min ago")
    assert cells[DEPENDENTS["singapore"]] == ("offline", "offline")
    assert "too old to vote" in _row(html, endpoints[0])
    assert "singapore is probe-offline: sees 4 of its 4 endpoints DOWN" in _row(html, endpoints[1])
    assert _cells(_row(html, endpoints[1]))[DEPENDENTS["virginia"]] == ("up", "20 ms")


def test_a_location_that_does_not_check_an_endpoint_shows_a_dash(primary):
    endpoint = primary.endpoint(locations=[DEPENDENTS["virginia"]])
    primary.beat("virginia", [(endpoint, True)])
    cells = _cells(_row(primary.web.get("/").get_data(as_text=True), endpoint))
    assert cells[DEPENDENTS["virginia"]] == ("up", "20 ms")
    assert cells[_own_id(primary.app)] == ("none", "–") and cells[DEPENDENTS["singapore"]] == ("none", "–")


def test_it_filters_by_location_status_location_and_consensus(primary):
    partial = primary.endpoint(name="partial")
    fine = primary.endpoint(name="fine")
    for endpoint, singapore_ok in ((partial, False), (fine, True)):
        primary.own(endpoint, True)
        primary.beat("virginia", [(endpoint, True)])
        primary.beat("singapore", [(endpoint, singapore_ok)])
    singapore, virginia = DEPENDENTS["singapore"], DEPENDENTS["virginia"]
    web = primary.web
    assert _listed(web.get("/?status=DOWN").get_data(as_text=True)) == [partial]
    assert _listed(web.get(f"/?status=DOWN&location={singapore}").get_data(as_text=True)) == [partial]
    assert _listed(web.get(f"/?status=DOWN&location={virginia}").get_data(as_text=True)) == []
    assert _listed(web.get(f"/?status=up&location={virginia}&sort=name").get_data(as_text=True)) == [fine, partial]
    assert _listed(web.get("/?consensus=PARTIAL").get_data(as_text=True)) == [partial]
    assert _listed(web.get("/?status=STALE").get_data(as_text=True)) == []
    with primary.app.app_context():
        db.session.get(LocationStatus, (fine, virginia)).last_checked_at = utcnow() - timedelta(minutes=5)
        db.session.commit()
    assert _listed(web.get("/?status=STALE").get_data(as_text=True)) == [fine]
    # A stale UP no longer counts as UP there.
    assert _listed(web.get(f"/?status=UP&location={virginia}").get_data(as_text=True)) == [partial]


def test_a_probe_offline_location_is_found_by_its_own_filter(primary):
    endpoints = [primary.endpoint(name=f"e{n}") for n in range(3)]
    for endpoint in endpoints:
        primary.own(endpoint, True)
        primary.beat("virginia", [(endpoint, True)])
    primary.beat("singapore", [(endpoint, False) for endpoint in endpoints])
    web = primary.web
    assert sorted(_listed(web.get("/?status=OFFLINE").get_data(as_text=True))) == endpoints
    assert _listed(web.get(f"/?status=OFFLINE&location={DEPENDENTS['virginia']}").get_data(as_text=True)) == []
    # Offline, it is not counted as DOWN there.
    assert _listed(web.get("/?status=DOWN").get_data(as_text=True)) == []


def test_the_poll_sends_a_row_whose_location_reported_without_changing_the_consensus(primary, no_overlap):
    endpoint = primary.endpoint()
    other = primary.endpoint(name="other")
    for each in (endpoint, other):
        primary.own(each, True)
        primary.beat("virginia", [(each, True)])
        primary.beat("singapore", [(each, True)])
    poll = _poll_url(primary.web.get("/").get_data(as_text=True))
    primary.beat("virginia", [(endpoint, True)], results=[{
        "resultId": "0c9a5a8e-5d3e-4c5e-9a53-1f0d6f1c0001", "endpointId": endpoint, "isOk": True,
        "responseTime": 77.0, "status": "UP", "failureReason": None, "checkType": "http", "metadata": {},
        "checkedAt": utcnow().isoformat()}])
    html = primary.web.get(poll, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert _listed(html) == [endpoint]
    assert _cells(_row(html, endpoint))[DEPENDENTS["virginia"]] == ("up", "77 ms")


def test_the_poll_sends_a_row_whose_location_went_stale_meanwhile(primary, no_overlap):
    endpoint = primary.endpoint()
    primary.own(endpoint, True)
    primary.beat("virginia", [(endpoint, True)])
    poll = _poll_url(primary.web.get("/").get_data(as_text=True))
    assert primary.web.get(poll, headers={"HX-Request": "true"}).status_code == 204
    with primary.app.app_context():
        # Nothing is written when time makes a location stale; here the clock
        # is moved the other way: its result is made old.
        db.session.execute(db.update(LocationStatus).where(LocationStatus.instance_id == DEPENDENTS["virginia"])
                           .values(last_checked_at=utcnow() - timedelta(minutes=3),
                                   updated_at=utcnow() - timedelta(hours=1)))
        db.session.commit()
    html = primary.web.get(poll, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert _cells(_row(html, endpoint))[DEPENDENTS["virginia"]] == ("stale", "3 min ago")


def test_a_dependent_shows_its_one_location_though_it_knows_the_members(tmp_path, migrated_sqlite_template):
    from app.models import MonitoringInstance
    from app.services.accounts import create_user

    application = instance_app(tmp_path, migrated_sqlite_template, {
        "PRIMARY_SYNC_URL": "http://127.0.0.1:9", "SYNC_SHARED_SECRET": SECRET, "INSTANCE_LOCATION": "virginia"},
        serve="web")
    with application.app_context():
        create_user(EMAIL, PASSWORD, is_admin=True)
        # A failover candidate holds a copy of the membership.
        db.session.add(MonitoringInstance(id=DEPENDENTS["singapore"], name="dep-singapore", location="singapore"))
        db.session.commit()
    endpoint = make_endpoint(application, name="api")
    add_result(application, endpoint, ms=33.0)
    client = application.test_client()
    assert sign_in(client).status_code == 302
    html = client.get("/").get_data(as_text=True)
    assert re.findall(r'class="loc" data-location="([^"]+)">(\w+)', html) == [(_own_id(application), "virginia")]
    assert list(_cells(_row(html, endpoint)).values()) == [("up", "33 ms")]
    assert client.get(f"/?location={DEPENDENTS['singapore']}").status_code == 400
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


# --- a standalone instance -----------------------------------------------------------


def test_a_standalone_shows_its_one_location_with_heartbeats_uptime_and_certificate(web, app):
    up = make_endpoint(app, name="Secure", target="https://secure.test/")
    down = make_endpoint(app, name="Broken")
    now = utcnow()
    for minutes in (30, 20, 10):
        add_result(app, up, ms=20.0, at=now - timedelta(minutes=minutes))
    add_result(app, up, ms=40.0, metadata=CERT)
    add_result(app, down, ok=False, reason="connection refused by 127.0.0.1:9")
    html = web.get("/").get_data(as_text=True)
    assert len(re.findall(r'class="loc"', html)) == 1
    secure = _row(html, up)
    assert list(_cells(secure).values()) == [("up", "40 ms")]
    assert ">Up</span>" in secure and "100.00 %" in secure and " of 1 up" not in secure
    assert 'class="warn">9 d</span>' in secure
    # The heartbeat bar replaces the sparkline: 40 slots, the 4 results on the right.
    bar = re.search(r'<span class="beats"[^>]*>(.*?)</span></td>', secure, re.S).group(1)
    assert bar.count('class="beat none"') == 36 and bar.count('class="beat up"') == 4
    assert re.search(r'title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC · lab · 40 ms"></span>$', bar)
    broken = _row(html, down)
    assert ">Down</span>" in broken and "connection refused by 127.0.0.1:9" in broken and "0.00 %" in broken
    assert 'class="beat down" title="' in broken and "lab · down: connection refused by 127.0.0.1:9" in broken
    assert "1 up" in html and "1 down" in html


def test_the_heartbeat_bar_shows_the_latest_forty_results(web, app):
    endpoint = make_endpoint(app, intervalSeconds=30)
    now = utcnow()
    for n in range(45):  # oldest first; the 5 oldest fail
        add_result(app, endpoint, ok=n >= 5, reason="HTTP 503", ms=float(n), at=now - timedelta(seconds=30 * (45 - n)))
    bar = re.search(r'<span class="beats"[^>]*>(.*?)</span></td>', _row(web.get("/").get_data(as_text=True), endpoint),
                    re.S).group(1)
    assert bar.count('class="beat up"') == 40 and "beat down" not in bar and "beat none" not in bar
    assert "· 5 ms" in bar and "· 44 ms" in bar and "· 4 ms" not in bar


def test_it_sorts_worst_first_by_default_then_by_name_or_group(web, app):
    up = make_endpoint(app, name="a-up", group="web")
    down = make_endpoint(app, name="z-down", group="db")
    pending = make_endpoint(app, name="m-pending")
    paused = make_endpoint(app, name="b-paused", group="web")
    add_result(app, up)
    add_result(app, down, ok=False, reason="refused")
    post(web, f"/endpoints/{paused}/pause")
    assert _listed(web.get("/").get_data(as_text=True)) == [down, pending, up, paused]
    assert _listed(web.get("/?sort=name").get_data(as_text=True)) == [up, paused, pending, down]
    grouped = web.get("/?sort=group").get_data(as_text=True)
    assert _listed(grouped) == [down, up, paused, pending]
    heads = re.findall(r'<tr class="group-head"><th scope="rowgroup" colspan="\d+">([^<]+)</th>', grouped)
    assert heads == ["db", "web", "No group"]


def test_it_filters_by_consensus_and_search(web, app):
    up = make_endpoint(app, name="Alpha api")
    down = make_endpoint(app, name="Beta db", group="Databases")
    add_result(app, up)
    add_result(app, down, ok=False, reason="nope")
    assert _listed(web.get("/?consensus=down").get_data(as_text=True)) == [down]
    assert _listed(web.get("/?q=databases").get_data(as_text=True)) == [down]
    fragment = web.get("/?q=alpha", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in fragment and _listed(fragment) == [up]
    assert 'id="status-summary" hx-swap-oob="true"' in fragment
    assert "No endpoint matches this filter." in web.get("/?q=nothing-like-this").get_data(as_text=True)
    assert 'href="?consensus=DOWN"' in web.get("/").get_data(as_text=True)


@pytest.mark.parametrize("query, field", [
    ("consensus=bogus", "consensus must be one of UP, PARTIAL, DOWN, PENDING, PAUSED"),
    ("status=PARTIAL", "status must be one of UP, DOWN, PENDING, STALE, OFFLINE (a location's status; "
                       "PARTIAL is a consensus: use consensus=PARTIAL)"),
    ("location=nowhere", "location must be the id of one of this dashboard's locations"),
    ("sort=size", "sort must be one of status, name, group"),
    ("page=0", "page must be a whole number from 1"),
    ("page=two", "page must be a whole number from 1"),
    ("page=%C2%B2", "page must be a whole number from 1"),
])
def test_a_bad_filter_is_a_400_naming_the_field(web, app, query, field):
    make_endpoint(app)
    page = web.get(f"/?{query}")
    html = page.get_data(as_text=True)
    assert page.status_code == 400 and field in html.replace("&#39;", "'")
    assert 'id="filters"' in html and "Show every endpoint" in html and 'id="endpoint-' not in html
    fragment = web.get(f"/?{query}", headers={"HX-Request": "true"})
    assert fragment.status_code == 400 and field in fragment.get_data(as_text=True).replace("&#39;", "'")


def test_several_bad_filters_are_named_together(web):
    html = web.get("/?consensus=x&sort=y&page=-1").get_data(as_text=True)
    assert "consensus must be" in html and "sort must be" in html and "page must be" in html


def test_it_pages_through_the_endpoints(web, app, monkeypatch):
    from app.services import dashboard

    monkeypatch.setattr(dashboard, "PAGE_SIZE", 2)
    ids = [make_endpoint(app, name=f"site-{n}") for n in range(7)]
    first = web.get("/?sort=name").get_data(as_text=True)
    assert _listed(first) == ids[:2] and "1–2 of 7" in first
    links = re.findall(r'<nav class="pager".*?</nav>', first, re.S)[0]
    assert '<a aria-current="page">1</a>' in links and 'href="/?sort=name&amp;page=4"' in links
    third = web.get("/?sort=name&page=3").get_data(as_text=True)
    assert _listed(third) == ids[4:6] and "5–6 of 7" in third
    # The poll of a page keeps its page and sort.
    assert "page=3" in _poll_url(third) and "sort=name" in _poll_url(third)
    for far in ("99", "0004", "9" * 30):
        past = web.get(f"/?sort=name&page={far}").get_data(as_text=True)
        assert _listed(past) == ids[6:] and "7–7 of 7" in past, far
    fragment = web.get("/?sort=name&page=2", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert _listed(fragment) == ids[2:4] and "<html" not in fragment


def test_long_names_can_wrap(web, app):
    endpoint = make_endpoint(app, name="x" * 200)
    row = _row(web.get("/").get_data(as_text=True), endpoint)
    assert '<td class="name">' in row and "x" * 200 in row


def test_the_matrix_queries_work_on_postgresql_too(pg_app):
    from app.services.accounts import create_user

    with pg_app.app_context():
        create_user(EMAIL, PASSWORD, is_admin=True)
    web = pg_app.test_client()
    assert sign_in(web).status_code == 302
    up = make_endpoint(pg_app, name="b-up", group="web", intervalSeconds=30)
    down = make_endpoint(pg_app, name="a-down")
    now = utcnow()
    for n in range(45):
        add_result(pg_app, up, ms=float(n), at=now - timedelta(seconds=30 * (45 - n)))
    add_result(pg_app, down, ok=False, reason="refused")
    html = web.get("/").get_data(as_text=True)
    assert _listed(html) == [down, up]
    bar = re.search(r'<span class="beats"[^>]*>(.*?)</span></td>', _row(html, up), re.S).group(1)
    assert bar.count('class="beat up"') == 40 and "· 5 ms" in bar and "· 4 ms" not in bar
    assert _listed(web.get("/?sort=group").get_data(as_text=True)) == [up, down]
    assert _listed(web.get("/?status=DOWN").get_data(as_text=True)) == [down]
    assert _listed(web.get("/?status=STALE").get_data(as_text=True)) == []
    assert _listed(web.get("/?consensus=UP&q=b-").get_data(as_text=True)) == [up]


# --- live refresh --------------------------------------------------------------------


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
    add_result(app, busy)
    poll = _poll_url(web.get("/?sort=name").get_data(as_text=True))
    add_result(app, busy, ms=55.0)
    response = web.get(poll, headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert _listed(html) == [busy] and "55 ms" in _row(html, busy)
    assert 'hx-swap-oob="true"' in _row(html, busy)
    assert 'id="dashboard-poll" hidden hx-swap-oob="true"' in html  # the poller moves on
    assert "2 up" in html


def test_the_poll_resends_the_table_when_the_set_of_rows_changed(web, app):
    make_endpoint(app, name="First")
    poll = _poll_url(web.get("/").get_data(as_text=True))
    second = make_endpoint(app, name="Second")
    html = web.get(poll, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert '<div id="dashboard-table" hx-swap-oob="true">' in html and f'id="endpoint-{second}"' in html


def test_the_poll_resends_the_table_when_a_change_reorders_it(web, app, no_overlap):
    first = make_endpoint(app, name="First")
    second = make_endpoint(app, name="Second")
    add_result(app, first)
    add_result(app, second)
    html = web.get("/").get_data(as_text=True)
    assert _listed(html) == [first, second]
    add_result(app, second, ok=False, reason="refused")  # worst first: it moves up
    html = web.get(_poll_url(html), headers={"HX-Request": "true"}).get_data(as_text=True)
    assert '<div id="dashboard-table" hx-swap-oob="true">' in html and _listed(html) == [second, first]


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

    def version():
        with app.test_request_context():
            columns = dashboard.columns()
            listed = dashboard.page(dashboard.Filters(), columns)
            dashboard.add_matrix(listed)
            return listed.rows[0].version

    first = version()
    assert version() == first
    add_result(app, endpoint_id, ms=99.0)
    assert version() != first


def _queries_for(app, client, url) -> int:
    statements = []

    def count_statement(conn, cursor, statement, *args):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count_statement)
    try:
        assert client.get(url).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count_statement)
    return len(statements)


def test_the_dashboard_reads_a_fixed_number_of_queries_whatever_the_endpoints(primary):
    def add(names):
        for name in names:
            endpoint = primary.endpoint(name=name, target=f"https://{name}.test/")
            primary.own(endpoint, True)
            primary.beat("virginia", [(endpoint, True)])
            primary.beat("singapore", [(endpoint, False)])

    add([f"a{n}" for n in range(3)])
    few = _queries_for(primary.web_app, primary.web, "/")
    few_filtered = _queries_for(primary.web_app, primary.web, "/?status=STALE&sort=group")
    add([f"b{n}" for n in range(30)])
    many = _queries_for(primary.web_app, primary.web, "/")
    many_filtered = _queries_for(primary.web_app, primary.web, "/?status=STALE&sort=group")
    assert few == many <= 18 and few_filtered == many_filtered <= 20


# --- other pages ---------------------------------------------------------------------


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
