"""The endpoint page on a primary with three locations: a response-time
series and legend entry per location, the consensus timeline, uptime per
location and of the consensus, failures with their location, and a range
that fits the endpoint's age. The dependents' results arrive through the
real sync API (registration and heartbeats) or, where a test needs the
consensus as of a moment in the past, through ``consensus.ingest`` with
that moment; the primary's own through ``record_results``."""
from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, text, update

from app.checks import CheckResult
from app.extensions import db
from app.models import Endpoint, ResponseTime, ResultLocationHour, utcnow
from app.services import configuration, consensus, history
from app.services.results import record_results, store_results
from tests.conftest import SECRET, instance_app, make_app
from tests.ui.conftest import EMAIL, PASSWORD, add_result, csrf_token, make_endpoint, sign_in

DEPENDENTS = {"virginia": "5f0c2a6e-0d7a-4c47-9d54-6a1f3a0b7c11",
              "singapore": "7d1e3b7f-1e8b-4d58-8e65-7b2f4b1c8d22"}
PRIMARY_ENV = {"ENABLE_SYNC_API": "true", "SYNC_SHARED_SECRET": SECRET, "INSTANCE_NAME": "fra-1",
               "INSTANCE_LOCATION": "frankfurt", "HEARTBEAT_INTERVAL": "5"}
_BAND = re.compile(r'<rect class="band (\w+)" x="([\d.]+)" y="0" width="([\d.]+)"')


class Cluster:
    """A primary's web app and sync API on one database, two dependents
    registered through the sync API, the admin signed in."""

    def __init__(self, web_app, sync_app):
        from app.services.accounts import create_user
        from app.services.sync import primary

        self.app = web_app
        with web_app.app_context():
            primary.register_self()
            create_user(EMAIL, PASSWORD, is_admin=True)
        self.sync = sync_app.test_client()
        self.tokens, self.ids = {}, {}
        for location, instance_id in DEPENDENTS.items():
            self.register(location, instance_id, location, f"dep-{location}")
        self.web = web_app.test_client()
        assert sign_in(self.web).status_code == 302
        self.web.token = csrf_token(self.web, "/")

    def register(self, key: str, instance_id: str, location: str, name: str) -> None:
        """A dependent joins through the sync API; ``key`` names it in these tests."""
        reply = self.sync.post("/sync/api/register", headers={"X-Cluster-Secret": SECRET}, json={
            "instanceId": instance_id, "instanceName": name, "location": location,
            "syncUrl": "http://127.0.0.1:4002", "failoverOrder": 1, "heartbeatInterval": 5})
        assert reply.status_code == 201, reply.get_json()
        self.tokens[key], self.ids[key] = reply.get_json()["token"], instance_id

    def endpoint(self, *, age=timedelta(0), **fields) -> int:
        """A new endpoint; ``age``: made as if created that long ago."""
        from app.services.endpoints import create_endpoint

        with self.app.app_context():
            endpoint_id = create_endpoint({"name": "shop", "checkType": "http", "target": "http://127.0.0.1:9/",
                                           "intervalSeconds": 60, "timeoutSeconds": 5, **fields}).id
            db.session.execute(update(Endpoint).where(Endpoint.id == endpoint_id)
                               .values(created_at=utcnow() - age))
            db.session.commit()
        return endpoint_id

    def own(self, endpoint_id, ok, *, at=None, ms=10.0, reason="HTTP 502"):
        """The primary's own check, stored as its check job stores it."""
        with self.app.app_context():
            own_id, location = configuration.instance_identity()
            record_results([(endpoint_id, CheckResult(
                is_ok=ok, check_type="http", response_time_ms=ms if ok else None,
                failure_reason=None if ok else reason, checked_at=at or utcnow()))],
                instance_id=own_id, location=location)

    def beat(self, location, endpoint_id, ok, *, at=None, ms=20.0, reason="timeout"):
        """A heartbeat from ``location`` carrying one result."""
        result = {"resultId": str(uuid.uuid4()), "endpointId": endpoint_id, "isOk": ok,
                  "responseTime": ms if ok else None, "status": "UP" if ok else "DOWN",
                  "failureReason": None if ok else reason, "checkType": "http", "metadata": {},
                  "checkedAt": (at or utcnow()).isoformat()}
        reply = self.sync.put("/sync/api/heartbeat", headers={"Authorization": f"Bearer {self.tokens[location]}"},
                              json={"instanceId": self.ids[location], "epoch": 0, "configVersion": 1,
                                    "results": [result]})
        assert reply.status_code == 200, reply.get_json()

    def ingest_as_of(self, location, endpoint_id, ok, at, *, ms=20.0):
        """A dependent's result stored and voted on as its heartbeat would
        be, with the clock at ``at`` (so a past consensus can be built)."""
        with self.app.app_context():
            rows = [{"result_id": str(uuid.uuid4()), "endpoint_id": endpoint_id,
                     "instance_id": self.ids[location], "location": location, "checked_at": at, "is_ok": ok,
                     "status": "UP" if ok else "DOWN", "response_time_ms": ms if ok else None,
                     "failure_reason": None if ok else "timeout", "check_type": "http", "check_metadata": {},
                     "synced_at": at}]
            store_results(rows)
            consensus.ingest(rows, instance_id=self.ids[location], location=location, own=False, now=at)
            db.session.commit()

    def chart(self, endpoint_id, range_key=None) -> str:
        query = f"?range={range_key}&part=chart" if range_key else "?part=chart"
        reply = self.web.get(f"/endpoints/{endpoint_id}{query}", headers={"HX-Request": "true"})
        assert reply.status_code == 200
        return reply.get_data(as_text=True)

    def page(self, endpoint_id, query="") -> str:
        reply = self.web.get(f"/endpoints/{endpoint_id}{query}")
        assert reply.status_code == 200
        return reply.get_data(as_text=True)


@pytest.fixture
def cluster(tmp_path, migrated_sqlite_template):
    web_app = instance_app(tmp_path, migrated_sqlite_template, PRIMARY_ENV, serve="web")
    sync_app = make_app(tmp_path, PRIMARY_ENV, serve="sync")
    yield Cluster(web_app, sync_app)
    for application in (web_app, sync_app):
        with application.app_context():
            db.session.remove()
            db.engine.dispose()


def _series(html: str) -> dict[str, str]:
    """Location name -> the CSS class of its line (or dot) in the chart."""
    found = {}
    for css, name in re.findall(r'<(?:polyline|circle) class="(series s\d+)"[^>]*><title>([^<]+)</title>', html):
        found.setdefault(name, css)
    return found


def _legend(html: str) -> list[str]:
    legend = re.search(r'<ul class="chart-legend".*?</ul>', html, re.S).group(0)
    return re.findall(r'<span class="name">([^<]+)</span>', legend)


def _current_range(html: str) -> str:
    """The range the chart's tabs mark as shown."""
    return re.search(r'range=(\w+)"[^>]*aria-current="true"', html.replace("&amp;", "&")).group(1)


def _uptime_row(html: str, name: str) -> list[str]:
    table = re.search(r'<table class="uptime-table">.*?</table>', html, re.S).group(0)
    row = re.search(rf'<th scope="row">(?:<span[^>]*></span>)?{name}</th>(.*?)</tr>', table, re.S).group(1)
    return [cell.strip() for cell in re.findall(r'<td class="num">(.*?)</td>', row)]


def test_it_draws_a_series_and_a_legend_entry_per_location(cluster):
    endpoint = cluster.endpoint()
    now = utcnow()
    for minutes in (3, 2, 1):
        at = now - timedelta(minutes=minutes)
        cluster.own(endpoint, True, at=at, ms=10.0)
        cluster.beat("virginia", endpoint, True, at=at, ms=80.0)
        cluster.beat("singapore", endpoint, True, at=at, ms=240.0)
    html = cluster.chart(endpoint, "1h")
    series = _series(html)
    # This instance first, then by name; one colour each.
    assert list(series) == ["frankfurt", "singapore", "virginia"]
    assert len(set(series.values())) == 3
    assert _legend(html) == ["frankfurt", "singapore", "virginia"]
    legend = re.search(r'<ul class="chart-legend".*?</ul>', html, re.S).group(0)
    assert "240 ms avg · 100.00 % of 3 checks passed" in legend
    # The swatch beside each name has that series' colour.
    for name, css in series.items():
        assert re.search(rf'<span class="swatch {css}"[^>]*></span><span class="name">{name}<', legend), name
    assert re.search(r'aria-label="response time per location: frankfurt, singapore, virginia"', html)
    # The same colours in another range.
    assert _series(cluster.chart(endpoint, "24h")) == series


def test_a_location_s_failures_are_marked_and_listed_with_the_location(cluster):
    endpoint = cluster.endpoint()
    cluster.own(endpoint, True)
    cluster.beat("virginia", endpoint, True)
    cluster.beat("singapore", endpoint, False, reason="connect timeout after 5 s")
    html = cluster.page(endpoint)
    mark = re.search(r'<rect class="fail"[^>]*><title>([^<]+)</title>', html).group(1)
    assert "singapore 1 of 1" in mark and "frankfurt" not in mark
    failures = re.search(r"<h2>Recent failures</h2>.*?</table>", html, re.S).group(0)
    assert re.search(r'<td class="failure-location">singapore</td><td>connect timeout after 5 s</td>', failures)
    # The live header says how many locations see it up.
    assert "2 of 3 locations up" in html and ">Partial</span>" in html


def test_the_timeline_shows_the_consensus_over_the_range(cluster):
    now = utcnow()
    endpoint = cluster.endpoint(age=timedelta(hours=3))
    steps = [(170, {"frankfurt": True, "virginia": True, "singapore": True}),     # UP
             (120, {"frankfurt": True, "virginia": True, "singapore": False}),    # PARTIAL
             (80, {"frankfurt": True, "virginia": False, "singapore": False}),    # DOWN (2 of 3)
             (40, {"frankfurt": True, "virginia": True, "singapore": True})]      # UP
    for minutes, seen in steps:
        at = now - timedelta(minutes=minutes)
        # The dependents first, at the same moment: each step's vote sees all three.
        for location in ("virginia", "singapore"):
            cluster.ingest_as_of(location, endpoint, seen[location], at)
        cluster.own(endpoint, seen["frankfurt"], at=at)
    html = cluster.chart(endpoint, "24h")
    bands = [(css, float(x), float(width)) for css, x, width in _BAND.findall(html)]
    assert [css for css, _, _ in sorted(bands, key=lambda b: b[1])] == ["pending", "up", "partial", "down", "up"]
    per_minute = (800 - 48 - 8) / (24 * 60 + 15)  # the 24 h axis runs to the end of the current 15 min
    widths = {css: width for css, _, width in bands if css in ("partial", "down")}
    assert widths["partial"] == pytest.approx(40 * per_minute, abs=1.0)
    assert widths["down"] == pytest.approx(40 * per_minute, abs=1.0)
    # The band ends where the endpoint's history does: now.
    last = max(bands, key=lambda b: b[1])
    assert last[1] + last[2] == pytest.approx(48 + per_minute * (24 * 60 + (now.minute % 15) + now.second / 60), abs=1.5)
    titles = re.findall(r'<rect class="band partial"[^>]*><title>([^<]+)</title>', html)
    assert titles and "(40 min)" in titles[0]

    page = cluster.page(endpoint, "?range=24h")
    # Consensus: up or partial for 130 of the 170 decided minutes.
    assert _uptime_row(page, "Consensus")[0] == f"{100 * 130 / 170:.2f} %"
    assert _uptime_row(page, "frankfurt") == ["100.00 %"] * 3
    assert _uptime_row(page, "virginia") == ["75.00 %"] * 3
    assert _uptime_row(page, "singapore") == ["50.00 %"] * 3


def test_a_flapping_endpoint_s_timeline_stays_small(cluster, monkeypatch):
    monkeypatch.setattr(history, "MAX_TIMELINE_CHANGES", 50)
    now = utcnow()
    endpoint = cluster.endpoint(age=timedelta(hours=2))
    for n in range(80):  # a change every 30 s for 40 minutes
        cluster.own(endpoint, n % 2 == 0, at=now - timedelta(minutes=50) + timedelta(seconds=30 * n))
    html = cluster.chart(endpoint, "24h")
    bands = _BAND.findall(html)
    # Changes closer than a few units apart are merged and shown in the worst status.
    assert 0 < len(bands) < 20
    assert "down" in {css for css, _, _ in bands}
    # Older than the newest 50 changes: marked as not shown, not guessed.
    assert "unknown" in {css for css, _, _ in bands}
    assert "more changes than the timeline keeps" in html or "not shown" in html


def test_week_and_month_come_from_per_location_counts(cluster):
    now = utcnow()
    endpoint = cluster.endpoint(age=timedelta(days=20))
    # A result every 6 hours for 20 days from each location: frankfurt always
    # up, virginia down 10 days ago, singapore down the last 3 days.
    for hours in range(6, 20 * 24, 6):
        at = now - timedelta(hours=hours)
        cluster.own(endpoint, True, at=at, ms=10.0)
        cluster.beat("virginia", endpoint, not (9 * 24 < hours <= 11 * 24), at=at, ms=50.0)
        cluster.beat("singapore", endpoint, hours > 3 * 24, at=at, ms=200.0)
    with cluster.app.app_context():
        stored = db.session.execute(select(ResultLocationHour.location, func.sum(ResultLocationHour.checks))
                                    .group_by(ResultLocationHour.location)).all()
        assert dict(stored) == {"frankfurt": 79, "virginia": 79, "singapore": 79}
        # Retention: raw results are gone; the week and month must not need them.
        db.session.execute(ResponseTime.__table__.delete())
        db.session.commit()

    html = cluster.chart(endpoint, "30d")
    assert _legend(html) == ["frankfurt", "singapore", "virginia"]
    points = {name: len(re.findall(rf'<title>{name}</title>', html)) for name in ("frankfurt", "virginia")}
    assert all(count >= 1 for count in points.values())
    assert "200 ms avg · 84.81 % of 79 checks passed" in html  # singapore: 12 of 79 down
    assert "50 ms avg · 89.87 % of 79 checks passed" in html   # virginia: 8 of 79 down
    page = cluster.page(endpoint, "?range=30d")
    assert _uptime_row(page, "frankfurt") == ["100.00 %"] * 3
    assert _uptime_row(page, "virginia")[1:] == ["100.00 %", "89.87 %"]
    assert _uptime_row(page, "singapore")[0] == "0.00 %"
    assert _uptime_row(page, "singapore")[2] == "84.81 %"


def test_a_late_result_counts_in_its_location_s_hour_at_once(cluster):
    now = utcnow()
    endpoint = cluster.endpoint(age=timedelta(days=5))
    at = now - timedelta(days=4)
    cluster.own(endpoint, True, at=at)
    cluster.beat("singapore", endpoint, True, at=at)
    # Singapore's outbox after an outage: a failure from four days ago.
    cluster.beat("singapore", endpoint, False, at=at + timedelta(minutes=1))
    page = cluster.page(endpoint, "?range=7d")
    assert _uptime_row(page, "singapore")[1] == "50.00 %"
    assert _uptime_row(page, "frankfurt")[1] == "100.00 %"


def test_a_month_reads_no_raw_results_in_bulk(cluster):
    now = utcnow()
    endpoint = cluster.endpoint(age=timedelta(days=30))
    for hours in range(1, 30 * 24, 12):
        cluster.own(endpoint, True, at=now - timedelta(hours=hours))
    aggregates = []

    def watch(conn, cursor, statement, parameters, context, executemany):
        if "response_times" in statement and "GROUP BY" in statement:
            aggregates.append(statement)

    with cluster.app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", watch)
    try:
        page = cluster.page(endpoint, "?range=30d")
    finally:
        event.remove(engine, "before_cursor_execute", watch)
    assert aggregates == []
    assert _uptime_row(page, "frankfurt") == ["100.00 %"] * 3


@pytest.mark.parametrize(("age", "expected"), [(timedelta(minutes=5), "1h"), (timedelta(hours=3), "24h"),
                                               (timedelta(days=40), "24h")])
def test_the_default_range_fits_the_endpoint_s_age(cluster, age, expected):
    endpoint = cluster.endpoint(age=age)
    cluster.own(endpoint, True)
    assert _current_range(cluster.page(endpoint)) == expected
    assert _current_range(cluster.chart(endpoint)) == expected


def test_an_explicit_range_wins_over_the_age(cluster):
    endpoint = cluster.endpoint(age=timedelta(minutes=5))
    assert _current_range(cluster.chart(endpoint, "7d")) == "7d"
    assert _current_range(cluster.page(endpoint, "?range=30d")) == "30d"
    # An unknown range falls back to the one that fits.
    assert _current_range(cluster.chart(endpoint, "5y")) == "1h"


def test_a_standalone_shows_its_one_location_the_same_way(web, app):
    endpoint_id = make_endpoint(app)
    now = utcnow()
    add_result(app, endpoint_id, ms=12.0, at=now - timedelta(minutes=2))
    add_result(app, endpoint_id, ok=False, reason="refused", at=now - timedelta(minutes=1))
    html = web.get(f"/endpoints/{endpoint_id}").get_data(as_text=True)
    assert _legend(html) == ["lab"]
    assert _series(html) == {"lab": "series s0"}
    assert {css for css, _, _ in _BAND.findall(html)} >= {"up", "down"}
    assert _uptime_row(html, "lab") == ["50.00 %"] * 3
    assert "locations up" not in html  # one location: nothing to count


def test_it_works_on_postgresql_too(pg_app):
    from app.services.endpoints import create_endpoint

    now = utcnow()
    with pg_app.app_context():
        endpoint = create_endpoint({"name": "pg", "checkType": "http", "target": "http://127.0.0.1:9/"})
        db.session.execute(update(Endpoint).where(Endpoint.id == endpoint.id)
                           .values(created_at=now - timedelta(days=10)))
        db.session.commit()
        for hours in range(1, 9 * 24, 8):
            at = now - timedelta(hours=hours)
            record_results([(endpoint.id, CheckResult(is_ok=True, check_type="http", response_time_ms=10.0,
                                                      checked_at=at))], instance_id="pg-primary", location="oslo")
            rows = [{"result_id": str(uuid.uuid4()), "endpoint_id": endpoint.id, "instance_id": "pg-dependent",
                     "location": "lima", "checked_at": at, "is_ok": hours > 24, "status": "UP",
                     "response_time_ms": 30.0, "failure_reason": None, "check_type": "http",
                     "check_metadata": {}, "synced_at": at}]
            store_results(rows)
            consensus.ingest(rows, instance_id="pg-dependent", location="lima", own=False, now=at)
            db.session.commit()
        endpoint = db.session.get(Endpoint, endpoint.id)
        view = history.range_chart(endpoint, "7d", now)
        totals = {s.location.name: (s.total.checks, s.total.ok_checks) for s in view.series}
        # The week's axis starts on a 2-hour boundary, up to 2 hours before 7 days ago.
        shown = sum(1 for hours in range(1, 9 * 24, 8) if now - timedelta(hours=hours) >= view.start)
        assert shown in (21, 22)
        assert totals == {"oslo": (shown, shown), "lima": (shown, shown - 3)}
        assert [s.status for s in view.timeline][-1] in ("UP", "PARTIAL")
        uptimes = {u.location.name: u.uptimes for u in history.location_uptimes(endpoint, now)}
        assert uptimes["lima"]["24h"] == 0.0 and uptimes["oslo"]["30d"] == 100.0
        assert db.session.execute(text("SELECT COUNT(*) FROM result_location_hours")).scalar_one() > 0


def test_two_instances_in_one_location_are_told_apart(cluster):
    cluster.register("virginia-b", "9a2f4c80-2f9c-4e69-9f76-8c3a5c2d9e33", "virginia", "dep-virginia-b")
    endpoint = cluster.endpoint()
    cluster.own(endpoint, True)
    cluster.beat("virginia", endpoint, True)
    cluster.beat("virginia-b", endpoint, False)
    html = cluster.page(endpoint)
    assert _legend(html) == ["frankfurt", "virginia (dep-virginia)", "virginia (dep-virginia-b)"]
    assert _uptime_row(html, re.escape("virginia (dep-virginia-b)")) == ["0.00 %"] * 3


@pytest.mark.sqlite_only("reads SQLite's query plan; PostgreSQL's planner scans a table this small whole")
def test_recent_failures_are_found_through_the_index_of_failures(app):
    endpoint_id = make_endpoint(app)
    now = utcnow()
    for minutes in range(30):
        add_result(app, endpoint_id, ok=minutes != 7, reason="refused", at=now - timedelta(minutes=minutes))
    with app.app_context():
        captured = []

        def capture(conn, cursor, statement, parameters, context, executemany):
            captured.append((statement, parameters))

        event.listen(db.engine, "before_cursor_execute", capture)
        try:
            failures = history.recent_failures(endpoint_id)
        finally:
            event.remove(db.engine, "before_cursor_execute", capture)
        assert [f.failure_reason for f in failures] == ["refused"]
        # A healthy endpoint's month would otherwise be read whole to find none.
        statement, parameters = captured[-1]
        plan = db.session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
        assert "ix_response_times_failed" in " ".join(str(row) for row in plan), plan
