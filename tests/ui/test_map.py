"""The location map page: markers placed by coordinates or by location,
coloured by health, figures over the last hour and day per instance and per
region, the live refresh, and coordinates arriving through the sync API."""
import random
import re
import threading
from datetime import timedelta
from html import unescape

import pytest
from werkzeug.serving import make_server

from app.checks import CheckResult
from app.extensions import db
from app.models import MonitoringInstance, ProbeState, utcnow
from app.services import configuration, rollups, world_map
from app.services.location_map import figures_by_instance
from app.services.results import record_results
from app.services.sync import dependent
from tests.conftest import SECRET, instance_app, make_app
from tests.sync.test_sync_api import bearer, heartbeat, registration
from tests.ui.conftest import EMAIL, PASSWORD, add_result, csrf_token, make_endpoint, sign_in

PRIMARY_ENV = {"ENABLE_SYNC_API": "true", "SYNC_SHARED_SECRET": SECRET, "INSTANCE_NAME": "fra-1",
               "INSTANCE_LOCATION": "eu-central-1"}
SYDNEY_ID = "0b7e5f7a-0000-4000-8000-000000000001"
SINGAPORE_ID = "0b7e5f7a-0000-4000-8000-000000000002"
BASEMENT_ID = "0b7e5f7a-0000-4000-8000-000000000003"
OHIO_ID = "0b7e5f7a-0000-4000-8000-000000000004"
SYDNEY_TWO_ID = "0b7e5f7a-0000-4000-8000-000000000005"


def signed_in(application):
    from app.services.accounts import create_user

    with application.app_context():
        create_user(EMAIL, PASSWORD, is_admin=True)
    client = application.test_client()
    assert sign_in(client).status_code == 302
    client.token = csrf_token(client, "/")
    return client


def dispose(*applications):
    for application in applications:
        with application.app_context():
            db.session.remove()
            db.engine.dispose()


def marker(html: str, instance_id: str) -> dict:
    """A marker's health, position and hover text, as the page has them."""
    match = re.search(rf'<g class="marker health-([a-z-]+)" id="marker-{instance_id}" data-health="([a-z-]+)" '
                      rf'transform="translate\(([-\d.]+) ([-\d.]+)\)">\s*<title>(.*?)</title>', html, re.S)
    assert match, f"no marker for {instance_id}"
    assert match.group(1) == match.group(2)
    return {"health": match.group(1), "x": float(match.group(3)), "y": float(match.group(4)),
            "title": unescape(match.group(5))}


def figure_cells(row: str) -> list[str]:
    """A region row's last hour and last day cells, as text."""
    return [" ".join(re.sub(r"<[^>]+>", " ", cell).split()) for cell in re.findall(r'<td class="num">(.*?)</td>', row)]


def region_row(html: str, location: str) -> str:
    start = html.index(f'data-location="{location}"')
    return html[start:html.index("</tr>", start)]


@pytest.fixture
def standalone(tmp_path, migrated_sqlite_template):
    application = instance_app(tmp_path, migrated_sqlite_template,
                               {"INSTANCE_NAME": "solo", "INSTANCE_LOCATION": "basement",
                                "INSTANCE_LATITUDE": "48.14", "INSTANCE_LONGITUDE": "11.58"}, serve="web")
    yield application, signed_in(application)
    dispose(application)


def test_a_standalone_shows_its_one_instance_with_its_figures(standalone):
    application, web = standalone
    endpoint_id = make_endpoint(application)
    now = utcnow()
    for minutes, ok, ms in ((1, True, 10.0), (2, True, 30.0), (3, False, None), (300, True, 100.0), (3000, True, 5.0)):
        add_result(application, endpoint_id, ok=ok, ms=ms, at=now - timedelta(minutes=minutes), reason="refused")
    html = web.get("/map").get_data(as_text=True)
    with application.app_context():
        own_id = configuration.instance_id()
    shown = marker(html, own_id)
    # At its own coordinates (Munich), though its location names no known place.
    assert (shown["x"], shown["y"]) == world_map.project(48.14, 11.58)
    assert shown["health"] == "active"
    assert "solo (this instance) · basement · Active" in shown["title"]
    # The last hour: 10, 30 and a failure; the last day adds 100 ms; two days ago counts for neither.
    assert "Last hour: 20 ms on average, 33 % failed of 3 checks" in shown["title"]
    assert "Last day: 47 ms on average, 25 % failed of 4 checks" in shown["title"]
    row = region_row(html, "basement")
    assert figure_cells(row) == ["20 ms 33 % failed", "47 ms 25 % failed"]
    assert html.count('class="marker ') == 1 and "Not placed" not in html
    assert '<a href="/map" aria-current="page">Map</a>' in html


def test_an_instance_without_coordinates_or_a_known_location_is_not_placed(web, app):
    html = web.get("/map").get_data(as_text=True)
    with app.app_context():
        own_id = configuration.instance_id()
    assert 'class="marker ' not in html
    assert "Not placed" in html and f'id="unplaced-{own_id}"' in html
    assert "INSTANCE_LATITUDE" in html


def test_an_instance_is_placed_by_the_region_its_location_names(tmp_path, migrated_sqlite_template):
    application = instance_app(tmp_path, migrated_sqlite_template, {"INSTANCE_LOCATION": "AWS ap_southeast_1"},
                               serve="web")
    try:
        web = signed_in(application)
        html = web.get("/map").get_data(as_text=True)
        with application.app_context():
            shown = marker(html, configuration.instance_id())
        assert (shown["x"], shown["y"]) == world_map.project(1.35, 103.82)
        assert "AWS ap_southeast_1 (Singapore)" in shown["title"]
        assert "Last hour: no checks" in shown["title"]
        assert figure_cells(region_row(html, "AWS ap_southeast_1")) == ["–", "–"]
    finally:
        dispose(application)


@pytest.fixture
def cluster_primary(tmp_path, migrated_sqlite_template):
    """A primary (web and sync API on one database) with four dependents
    registered and heard from through the sync API: one with coordinates,
    one in a known region, one in an unknown place, one in Ohio."""
    from app.services.sync import primary

    web_app = instance_app(tmp_path, migrated_sqlite_template, PRIMARY_ENV, serve="web")
    sync_app = make_app(tmp_path, PRIMARY_ENV, serve="sync")
    with web_app.app_context():
        primary.register_self()
    sync = sync_app.test_client()
    members = {SYDNEY_ID: ("syd-1", "down-under", {"latitude": -33.87, "longitude": 151.21}),
               SINGAPORE_ID: ("sin-1", "ap-southeast-1", {}),
               BASEMENT_ID: ("cellar", "basement", {}),
               OHIO_ID: ("ohio-1", "us-east-2", {})}
    tokens = {}
    for instance_id, (name, location, coordinates) in members.items():
        token = sync.post("/sync/api/register", headers={"X-Cluster-Secret": SECRET}, json=registration(
            instanceId=instance_id, instanceName=name, location=location)).get_json()["token"]
        tokens[instance_id] = token
        reply = sync.put("/sync/api/heartbeat", headers=bearer(token), json=heartbeat(
            instanceId=instance_id, systemInfo={"cpuPercent": 1.0, **coordinates}))
        assert reply.status_code == 200, reply.get_json()
    sync.tokens = tokens
    yield web_app, signed_in(web_app), sync
    dispose(web_app, sync_app)


def test_the_primary_shows_every_member_coloured_by_health(cluster_primary):
    from app.services.sync import primary

    web_app, web, _ = cluster_primary
    with web_app.app_context():
        # Ohio went silent ten minutes ago (failed); Singapore's probe is offline.
        db.session.get(MonitoringInstance, OHIO_ID).last_heartbeat_at = utcnow() - timedelta(seconds=700)
        probe = db.session.get(ProbeState, SINGAPORE_ID)
        probe.offline_since, probe.offline_reason = utcnow(), "connectivity check failed"
        db.session.commit()
        primary.mark_silent_instances()
        own_id = configuration.instance_id()
    html = web.get("/map").get_data(as_text=True)

    own = marker(html, own_id)
    assert own["health"] == "active" and (own["x"], own["y"]) == world_map.project(50.11, 8.68)
    sydney = marker(html, SYDNEY_ID)
    assert sydney["health"] == "active" and (sydney["x"], sydney["y"]) == world_map.project(-33.87, 151.21)
    singapore = marker(html, SINGAPORE_ID)
    assert singapore["health"] == "probe-offline"
    assert "Probe offline: connectivity check failed" in singapore["title"]
    assert marker(html, OHIO_ID)["health"] == "failed"
    assert f'id="marker-{BASEMENT_ID}"' not in html and f'id="unplaced-{BASEMENT_ID}"' in html
    # A region's row shows each of its instances with its health; the worst regions first.
    locations = re.findall(r'data-location="([^"]+)"', html)
    assert locations[:2] == ["us-east-2", "ap-southeast-1"]
    assert 'class="badge down" title="Failed"><span class="dot" aria-hidden="true"></span>ohio-1' in html


def test_figures_are_per_instance_and_summed_per_region(cluster_primary):
    from tests.sync.test_sync_api import result

    web_app, web, sync = cluster_primary
    with web_app.app_context():
        from app.services.endpoints import create_endpoint

        endpoint_id = create_endpoint({"name": "web", "checkType": "tcp", "target": "127.0.0.1", "port": 9}).id
    # A second instance in Sydney's location: the region sums both.
    token = sync.post("/sync/api/register", headers={"X-Cluster-Secret": SECRET}, json=registration(
        instanceId=SYDNEY_TWO_ID, instanceName="syd-2", location="down-under")).get_json()["token"]
    now = utcnow()
    batch = [result(endpoint_id, responseTime=40.0, checkedAt=(now - timedelta(minutes=5)).isoformat()),
             result(endpoint_id, isOk=False, status="DOWN", responseTime=None, failureReason="refused",
                    checkedAt=(now - timedelta(hours=3)).isoformat())]
    reply = sync.put("/sync/api/heartbeat", headers=bearer(token), json=heartbeat(
        batch, instanceId=SYDNEY_TWO_ID, systemInfo={"latitude": -33.9, "longitude": 151.2}))
    assert reply.status_code == 200, reply.get_json()
    html = web.get("/map").get_data(as_text=True)
    syd2 = marker(html, SYDNEY_TWO_ID)
    assert "Last hour: 40 ms on average, 0 % failed of 1 check" in syd2["title"]
    assert "Last day: 40 ms on average, 50 % failed of 2 checks" in syd2["title"]
    assert "Last hour: no checks" in marker(html, SYDNEY_ID)["title"]
    row = region_row(html, "down-under")
    assert "syd-1" in row and "syd-2" in row
    assert figure_cells(row) == ["40 ms 0 % failed", "40 ms 50 % failed"]
    # Two instances a few kilometres apart are set around their point, not on top of each other.
    sydney = marker(html, SYDNEY_ID)
    assert (sydney["x"], sydney["y"]) != (syd2["x"], syd2["y"])


def test_the_live_refresh_sends_markers_and_regions_alone(cluster_primary):
    _, web, _ = cluster_primary
    page = web.get("/map")
    assert 'hx-get="/map" hx-trigger="every 15s" hx-swap="outerHTML"' in page.get_data(as_text=True)
    response = web.get("/map", headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in html and 'class="land"' not in html
    assert html.lstrip().startswith('<div id="map-markers"')
    assert f'id="marker-{SYDNEY_ID}"' in html and 'id="map-regions" class="map-regions" hx-swap-oob="true"' in html
    assert "HX-Request" in response.headers["Vary"] and "HX-Request" in page.headers["Vary"]


def test_the_land_comes_from_the_atlas_and_its_absence_is_explained(cluster_primary, tmp_path, monkeypatch):
    _, web, _ = cluster_primary
    if world_map.world() is None:
        pytest.skip(f"the world atlas is not fetched ({world_map.FETCH_COMMAND})")
    html = web.get("/map").get_data(as_text=True)
    assert html.count("<title>Germany</title>") == 1 and 'class="land"' in html
    assert world_map.FETCH_COMMAND not in html
    monkeypatch.setattr(world_map, "ATLAS_FILE", tmp_path / "absent" / "countries-110m.json")
    response = web.get("/map")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'class="land"' not in html and f"<code>{world_map.FETCH_COMMAND}</code>" in html
    assert f'id="marker-{SYDNEY_ID}"' in html  # the markers do not need the land


def test_half_a_pair_of_coordinates_is_refused_naming_the_field(cluster_primary):
    _, _, sync = cluster_primary
    token = sync.tokens[SYDNEY_ID]
    for system_info in ({"latitude": 10.0}, {"latitude": 91.0, "longitude": 0.0}):
        reply = sync.put("/sync/api/heartbeat", headers=bearer(token),
                         json=heartbeat(instanceId=SYDNEY_ID, systemInfo=system_info))
        assert reply.status_code in (400, 422), reply.get_json()
        assert "systemInfo" in str(reply.get_json())


# --- through the real sync API ---------------------------------------------------


@pytest.fixture
def served_primary(tmp_path, migrated_sqlite_template):
    """A primary's sync API served on loopback, and its web app."""
    sync_app = instance_app(tmp_path / "primary", migrated_sqlite_template, PRIMARY_ENV, serve="sync")
    web_app = make_app(tmp_path / "primary", PRIMARY_ENV, serve="web")
    server = make_server("127.0.0.1", 0, sync_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield web_app, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    dispose(sync_app, web_app)


def test_a_dependents_coordinates_reach_the_primarys_map(served_primary, tmp_path, migrated_sqlite_template):
    web_app, primary_url = served_primary
    member = instance_app(tmp_path / "dependent", migrated_sqlite_template, {
        "PRIMARY_SYNC_URL": primary_url, "SYNC_SHARED_SECRET": SECRET, "INSTANCE_NAME": "gru-1",
        "INSTANCE_LOCATION": "lab", "INSTANCE_LATITUDE": "-23.55", "INSTANCE_LONGITUDE": "-46.63"}, serve="none")
    try:
        with member.app_context():
            dependent.sync_once()  # registers, pulls the configuration, sends a heartbeat
            member_id = configuration.instance_id()
        with web_app.app_context():
            stored = db.session.get(MonitoringInstance, member_id)
            assert (stored.system_info["latitude"], stored.system_info["longitude"]) == (-23.55, -46.63)
        html = signed_in(web_app).get("/map").get_data(as_text=True)
        shown = marker(html, member_id)
        assert (shown["x"], shown["y"]) == world_map.project(-23.55, -46.63)
        assert "gru-1 · lab · Active" in shown["title"]
    finally:
        dispose(member)


def test_figures_read_as_the_map_shows_them():
    from app.blueprints.ui.map import milliseconds, percent

    assert [milliseconds(v) for v in (None, 0.42, 9.96, 10.4, 1234.5)] == ["–", "0.4 ms", "10 ms", "10 ms", "1234 ms"]
    assert [percent(v) for v in (None, 0.0, 0.25, 33.333, 100.0)] == ["–", "0 %", "0.2 %", "33 %", "100 %"]


def _store(application, endpoint_id, results):
    """Results as (instance id, checked at, ok, response time)."""
    with application.app_context():
        for instance_id, at, ok, ms in results:
            result = CheckResult(is_ok=ok, check_type="http", response_time_ms=ms,
                                 failure_reason=None if ok else "refused")
            result.checked_at = at
            record_results([(endpoint_id, result)], instance_id=instance_id, location="lab")


def _counted(results, instance_id, start, now, *, end=None):
    """(checks, failures, average ms) of ``results`` by ``instance_id``
    checked in [start, now], or in [start, end) with ``end``."""
    mine = [(ok, ms) for i, at, ok, ms in results
            if i == instance_id and start <= at and (at < end if end is not None else at <= now)]
    measured = [ms for _, ms in mine if ms is not None]
    return len(mine), sum(1 for ok, _ in mine if not ok), pytest.approx(sum(measured) / len(measured))


def _shown(application, instance_ids, now):
    with application.app_context():
        figures = figures_by_instance(instance_ids, now)
        db.session.remove()
    return {instance_id: [(f.checks, f.failures, f.average_ms) for f in pair] for instance_id, pair in figures.items()}


@pytest.mark.parametrize("database", ["app", "pg_app"])
def test_the_hour_is_counted_exactly_and_the_day_from_the_hour_it_starts_in(database, request):
    application = request.getfixturevalue(database)
    endpoint_id = make_endpoint(application)
    now = utcnow()
    rng = random.Random(9)
    results = [(rng.choice(["a" * 8, "b" * 8]), now - timedelta(seconds=rng.uniform(-30, 26 * 3600)),
                rng.random() > 0.2, round(rng.uniform(1, 500), 1)) for _ in range(600)]
    # On the edges of the spans, to the microsecond, and in the day's first hour before its 24 hours.
    day_start = rollups.hour_floor(now - timedelta(days=1))
    results += [("a" * 8, now - timedelta(hours=1), True, 7.0), ("a" * 8, now - timedelta(days=1), False, None),
                ("b" * 8, now, True, 3.0), ("b" * 8, day_start, True, 11.0),
                ("b" * 8, day_start - timedelta(microseconds=1), True, 13.0)]
    _store(application, endpoint_id, results)
    # The last hour exactly; the last day from the start of the hour it
    # starts in (24 to 25 hours) through the current hour, counted as
    # results were stored: with no job run, nothing more to wait for.
    end = rollups.hour_floor(now) + timedelta(hours=1)
    expected = {instance_id: [_counted(results, instance_id, now - timedelta(hours=1), now),
                              _counted(results, instance_id, day_start, now, end=end)]
                for instance_id in ("a" * 8, "b" * 8)}
    assert _shown(application, ["a" * 8, "b" * 8, "c" * 8], now) == expected


def test_a_result_that_arrives_late_counts_in_the_hour_and_the_day_at_once(app):
    endpoint_id = make_endpoint(app)
    now = utcnow()
    results = [("a" * 8, now - timedelta(hours=3), True, 10.0), ("a" * 8, now - timedelta(minutes=50), True, 30.0)]
    _store(app, endpoint_id, results)
    assert _shown(app, ["a" * 8], now) == {"a" * 8: [(1, 0, 30.0), (2, 0, 20.0)]}
    # A dependent's outbox delivered after an outage: results checked three
    # hours and 55 minutes ago.
    late = [("a" * 8, now - timedelta(hours=3, minutes=1), False, None), ("a" * 8, now - timedelta(minutes=55), True, 50.0)]
    _store(app, endpoint_id, late)
    assert _shown(app, ["a" * 8], now) == {"a" * 8: [(2, 0, 40.0), (4, 1, 30.0)]}


def test_figures_as_of_a_moment_in_the_past_count_its_hour_whole(app):
    endpoint_id = make_endpoint(app)
    now = utcnow()
    earlier = now - timedelta(hours=2)
    results = [("a" * 8, earlier - timedelta(minutes=m), True, float(m)) for m in (10, 70, 300)]
    results += [("a" * 8, now - timedelta(minutes=m), False, None) for m in (20, 100)]  # after ``earlier``
    _store(app, endpoint_id, results)
    # The last hour stops at ``earlier``; the day counts the hour ``earlier`` falls in whole.
    expected = [_counted(results, "a" * 8, earlier - timedelta(hours=1), earlier),
                _counted(results, "a" * 8, rollups.hour_floor(earlier - timedelta(days=1)), earlier,
                         end=rollups.hour_floor(earlier) + timedelta(hours=1))]
    assert _shown(app, ["a" * 8], earlier) == {"a" * 8: expected}
