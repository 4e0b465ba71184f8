"""The endpoint page of a primary with three locations, in a real browser.

A real monitor process tree (``python -m app start``) as the primary,
checking a loopback HTTP server from its own location; two dependents
register and send heartbeats through its sync API. Before it starts, its
data directory is given 20 hours of history from the three locations by
the real services (``record_results``, and ``consensus.ingest`` as of the
moment each result was made), so the consensus timeline has something to
show. With SAVE_SCREENSHOTS=1 the screenshot is written to
docs/screenshots/endpoint-locations.png as well.
"""
from __future__ import annotations

import http.server
import random
import threading
import uuid
from datetime import timedelta

import pytest
import requests
from sqlalchemy import update

from tests.peers.browser import browser, needs_chromium, new_page, screenshot  # noqa: F401 - browser is a fixture
from tests.peers.ports import reserve_port
from tests.peers.process import ADMIN, MonitorProcess, monitor_env

pytestmark = needs_chromium

SECRET = "browser-test-join-secret-42"
DEPENDENTS = {"virginia": "5f0c2a6e-0d7a-4c47-9d54-6a1f3a0b7c11",
              "singapore": "7d1e3b7f-1e8b-4d58-8e65-7b2f4b1c8d22"}
TYPICAL_MS = {"frankfurt": 35.0, "virginia": 110.0, "singapore": 230.0}


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def target():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", reserve_port()), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _seed_history(env: dict, target: str) -> int:
    """Migrate the data directory as the primary and give one endpoint 20
    hours of results from three locations: singapore failing from 14 to 12
    hours ago (PARTIAL), virginia and singapore 6 hours ago for 25 minutes
    (DOWN). Returns the endpoint's id."""
    from pathlib import Path

    from app.checks import CheckResult
    from app.extensions import db
    from app.models import Endpoint, utcnow
    from app.services import configuration, consensus
    from app.services.endpoints import create_endpoint
    from app.services.results import record_results, store_results
    from tests.conftest import make_app, migrate

    Path(env["DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    app = make_app(Path(env["DATA_DIR"]), {key: env[key] for key in (
        "ENABLE_SYNC_API", "SYNC_SHARED_SECRET", "INSTANCE_NAME", "INSTANCE_LOCATION")}, serve="none")
    migrate(app)
    rng = random.Random(9)
    now = utcnow()
    with app.app_context():
        own_id, own_location = configuration.instance_identity()
        endpoint_id = create_endpoint({"name": "Checkout API", "checkType": "http", "target": target,
                                       "intervalSeconds": 300, "timeoutSeconds": 3}).id
        db.session.execute(update(Endpoint).where(Endpoint.id == endpoint_id)
                           .values(created_at=now - timedelta(hours=20)))
        db.session.commit()
        for step in range(20 * 12, 0, -1):  # every 5 minutes (its interval), oldest first
            at = now - timedelta(minutes=5 * step)
            hours_ago = step / 12
            down = {"singapore"} if 12 < hours_ago <= 14 else set()
            if 5.6 < hours_ago <= 6:
                down = {"virginia", "singapore"}
            for location, instance_id in DEPENDENTS.items():
                ok = location not in down
                rows = [{"result_id": str(uuid.uuid4()), "endpoint_id": endpoint_id, "instance_id": instance_id,
                         "location": location, "checked_at": at, "is_ok": ok, "status": "UP" if ok else "DOWN",
                         "response_time_ms": TYPICAL_MS[location] * rng.uniform(0.8, 1.3) if ok else None,
                         "failure_reason": None if ok else "connect timeout after 3 s", "check_type": "http",
                         "check_metadata": {}, "synced_at": at}]
                store_results(rows)
                consensus.ingest(rows, instance_id=instance_id, location=location, own=False, now=at)
                db.session.commit()
            record_results([(endpoint_id, CheckResult(
                is_ok=True, check_type="http", response_time_ms=TYPICAL_MS["frankfurt"] * rng.uniform(0.8, 1.4),
                checked_at=at))], instance_id=own_id, location=own_location)
        db.session.remove()
        db.engine.dispose()
    return endpoint_id


class Dependent:
    """A dependent as the primary's sync API sees it: registered, sending heartbeats."""

    def __init__(self, sync_url: str, location: str):
        self.sync_url, self.location, self.instance_id = sync_url, location, DEPENDENTS[location]
        reply = requests.post(f"{sync_url}/sync/api/register", headers={"X-Cluster-Secret": SECRET}, timeout=30, json={
            "instanceId": self.instance_id, "instanceName": f"dep-{location}", "location": location,
            "syncUrl": "http://127.0.0.1:9", "failoverOrder": 0, "heartbeatInterval": 5})
        assert reply.status_code == 201, reply.text
        self.token = reply.json()["token"]

    def beat(self, endpoint_id: int, ok: bool) -> None:
        from app.models import utcnow

        result = {"resultId": str(uuid.uuid4()), "endpointId": endpoint_id, "isOk": ok,
                  "responseTime": TYPICAL_MS[self.location] if ok else None, "status": "UP" if ok else "DOWN",
                  "failureReason": None if ok else "connect timeout after 3 s", "checkType": "http",
                  "metadata": {}, "checkedAt": utcnow().isoformat()}
        reply = requests.put(f"{self.sync_url}/sync/api/heartbeat", timeout=30,
                             headers={"Authorization": f"Bearer {self.token}"},
                             json={"instanceId": self.instance_id, "epoch": 0, "configVersion": 1,
                                   "results": [result]})
        assert reply.status_code == 200, reply.text


def test_the_endpoint_page_shows_each_location_and_the_consensus(target, browser, tmp_path):
    from playwright.sync_api import expect

    env = monitor_env(tmp_path / "data", admin=ADMIN, INSTANCE_NAME="fra-1", INSTANCE_LOCATION="frankfurt",
                      ENABLE_SYNC_API="true", SYNC_SHARED_SECRET=SECRET, HEARTBEAT_INTERVAL=5)
    endpoint_id = _seed_history(env, target)
    with MonitorProcess(env, tmp_path / "monitor.log") as monitor:
        dependents = [Dependent(monitor.sync, location) for location in ("virginia", "singapore")]
        for dependent in dependents:
            dependent.beat(endpoint_id, True)

        page = new_page(browser, viewport={"width": 1280, "height": 900})
        page.goto(monitor.web + "/login")
        page.fill("input[name=email]", ADMIN[0])
        page.fill("input[name=password]", ADMIN[1])
        page.click("button[type=submit]")
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
        page.goto(f"{monitor.web}/endpoints/{endpoint_id}")
        expect(page.get_by_role("heading", name="Checkout API")).to_be_visible()
        # 20 hours old: a day's range, not an hour's.
        expect(page.locator('#chart-panel nav a[aria-current="true"]')).to_have_text("24 hours")

        legend = page.locator("#chart-panel .chart-legend li")
        expect(legend).to_have_count(3)
        for index, name in enumerate(("frankfurt", "singapore", "virginia")):
            expect(legend.nth(index).locator(".name")).to_have_text(name)
            expect(legend.nth(index).locator(".swatch")).to_be_visible()
        # A line in each location's colour (broken where its checks failed).
        for colour in ("s0", "s1", "s2"):
            expect(page.locator(f"svg.chart polyline.series.{colour}").first).to_be_visible()
        expect(page.locator("svg.chart polyline.series.s3")).to_have_count(0)
        band = page.locator("svg.consensus-band")
        expect(band).to_be_visible()
        for status in ("up", "partial", "down"):
            expect(band.locator(f"rect.band.{status}").first).to_be_visible()
        uptime = page.locator("table.uptime-table tbody tr")
        expect(uptime).to_have_count(4)  # the consensus and three locations
        expect(uptime.first).to_contain_text("Consensus")

        # Live: singapore fails now; the header follows without a reload.
        page.evaluate("window.__sameDocument = true")
        dependents[0].beat(endpoint_id, True)
        dependents[1].beat(endpoint_id, False)
        header = page.locator("#endpoint-status")
        expect(header).to_contain_text("Partial", timeout=60_000)
        expect(header).to_contain_text("2 of 3 locations up")
        assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
        screenshot(page, tmp_path, "endpoint-locations.png")

        # Another range through HTMX: the panel is swapped, the page stays.
        page.click("#chart-panel nav >> text=7 days")
        expect(page.locator('#chart-panel nav a[aria-current="true"]')).to_have_text("7 days")
        expect(page).to_have_url(f"{monitor.web}/endpoints/{endpoint_id}?range=7d")
        expect(page.locator("#chart-panel .chart-legend li")).to_have_count(3)
        expect(page.locator("svg.consensus-band rect.band.down").first).to_be_visible()
        assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
