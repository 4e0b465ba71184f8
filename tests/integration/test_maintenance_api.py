"""Maintenance windows over the JSON API: CRUD, validation naming every bad
field in the product's words with nothing stored, strict JSON types,
viewers and dependents refused, and the configuration version bumped. On
SQLite, and on PostgreSQL when TEST_DATABASE_URL is set."""
import base64

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import MaintenanceWindow
from app.services import configuration

ADMIN = ("admin@example.org", "correct horse battery")
VIEWER = ("viewer@example.org", "viewer password 123")
BASE = "/api/v1/maintenance-windows"


def basic(email, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


@pytest.fixture(params=["sqlite", "postgresql"])
def api_app(request):
    from app.services.accounts import create_user
    from app.services.endpoints import create_endpoint

    application = request.getfixturevalue("app" if request.param == "sqlite" else "pg_app")
    with application.app_context():
        create_user(*ADMIN, is_admin=True)
        create_user(*VIEWER, is_admin=False)
        for name, group in (("Orders DB", "Databases"), ("Shop", None)):
            create_endpoint({"name": name, "checkType": "tcp", "target": "127.0.0.1", "port": 9, "group": group})
    return application


@pytest.fixture
def api(api_app):
    return api_app.test_client()


ADMIN_HEADERS = basic(*ADMIN)
NIGHTLY = {"title": "Nightly backup", "description": "Disks are slow", "cronExpression": "30 2 * * *",
           "timeZone": "Europe/Berlin", "durationMinutes": 60, "groups": ["Databases"]}
ONE_OFF = {"title": "Database upgrade", "startsAt": "2030-05-01T10:00:00Z", "endsAt": "2030-05-01T12:00:00+00:00",
           "endpointIds": [2, 1, 2]}


def _count(app) -> int:
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(MaintenanceWindow)).scalar_one()


def test_it_creates_reads_changes_and_deletes_a_window(api_app, api):
    with api_app.app_context():
        version = configuration.config_version()
    created = api.post(BASE, json=ONE_OFF, headers=ADMIN_HEADERS)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert created.headers["Location"].endswith(f"{BASE}/{body['id']}")
    assert body["kind"] == "oneOff" and body["endpointIds"] == [1, 2] and body["groups"] == []
    assert body["startsAt"] == "2030-05-01T10:00:00+00:00" and body["nextStartsAt"] == "2030-05-01T10:00:00+00:00"
    assert body["inProgress"] is False and body["isActive"] is True
    with api_app.app_context():
        assert configuration.config_version() == version + 1

    recurring = api.post(BASE, json=NIGHTLY, headers=ADMIN_HEADERS).get_json()
    assert recurring["kind"] == "recurring" and recurring["startsAt"] is None and recurring["nextStartsAt"]
    listed = api.get(BASE, headers=ADMIN_HEADERS).get_json()["maintenanceWindows"]
    assert [w["title"] for w in listed] == ["Database upgrade", "Nightly backup"]
    assert api.get(f"{BASE}/{recurring['id']}", headers=ADMIN_HEADERS).get_json() == recurring

    patched = api.patch(f"{BASE}/{body['id']}", json={"title": "Upgrade to 17", "isActive": False},
                        headers=ADMIN_HEADERS)
    assert patched.status_code == 200
    assert patched.get_json()["title"] == "Upgrade to 17" and patched.get_json()["endpointIds"] == [1, 2]
    assert patched.get_json()["nextStartsAt"] is None  # switched off

    # PATCH to the other kind drops the one-off times.
    turned = api.patch(f"{BASE}/{body['id']}", json={"cronExpression": "0 3 * * 0", "timeZone": "UTC",
                                                     "durationMinutes": 30}, headers=ADMIN_HEADERS)
    assert turned.status_code == 200, turned.get_json()
    assert turned.get_json()["kind"] == "recurring" and turned.get_json()["startsAt"] is None

    # PUT replaces: what it omits takes its default.
    put = api.put(f"{BASE}/{body['id']}", json={**ONE_OFF, "title": "Replaced"}, headers=ADMIN_HEADERS)
    assert put.status_code == 200 and put.get_json()["isActive"] is True and put.get_json()["description"] is None

    assert api.delete(f"{BASE}/{body['id']}", headers=ADMIN_HEADERS).status_code == 204
    assert api.get(f"{BASE}/{body['id']}", headers=ADMIN_HEADERS).status_code == 404
    assert _count(api_app) == 1


def test_it_names_every_bad_field_and_stores_nothing(api_app, api):
    response = api.post(BASE, json={"title": "", "cronExpression": "61 * * *", "timeZone": "Mars/Olympus",
                                    "durationMinutes": "60", "endpointIds": [1, 99], "groups": ["Nope"],
                                    "color": "red"}, headers=ADMIN_HEADERS)
    assert response.status_code == 400
    fields = response.get_json()["fields"]
    assert fields == {
        "title": "must not be empty",
        "cronExpression": "is not a valid cron expression: give five fields (minute hour day-of-month month "
                          "day-of-week), such as 0 2 * * 0 for Sundays at 02:00",
        "timeZone": "is not a known time zone: use an IANA name such as Europe/Berlin, or UTC",
        "durationMinutes": "must be a whole number, not text: send 60 without quotes",
        "endpointIds": "names endpoints that do not exist: 99",
        "groups": "names groups no endpoint belongs to: Nope",
        "color": "is not a field of a maintenance window",
    }
    assert _count(api_app) == 0


def test_it_refuses_an_end_before_the_start_and_mixed_kinds(api, api_app):
    backwards = api.post(BASE, json={**ONE_OFF, "endsAt": "2030-05-01T09:00:00Z"}, headers=ADMIN_HEADERS)
    assert backwards.get_json()["fields"] == {
        "endsAt": "must be after the start (startsAt): the end is before the start"}
    mixed = api.post(BASE, json={**NIGHTLY, "startsAt": "2030-05-01T09:00:00Z"}, headers=ADMIN_HEADERS)
    assert set(mixed.get_json()["fields"]) == {"startsAt"}
    missing = api.post(BASE, json={"title": "x", "cronExpression": "0 2 * * *"}, headers=ADMIN_HEADERS)
    assert set(missing.get_json()["fields"]) == {"durationMinutes", "timeZone", "endpointIds"}
    bad_time = api.post(BASE, json={**ONE_OFF, "startsAt": "tomorrow", "endsAt": 5}, headers=ADMIN_HEADERS)
    assert bad_time.get_json()["fields"] == {"startsAt": "must be a time in ISO 8601, such as 2026-01-31T12:00:00Z",
                                             "endsAt": "must be text"}
    seconds = api.post(BASE, json={**NIGHTLY, "cronExpression": "0 0 2 * * *"}, headers=ADMIN_HEADERS)
    assert "cronExpression" in seconds.get_json()["fields"]
    never = api.post(BASE, json={**NIGHTLY, "cronExpression": "0 0 30 2 *"}, headers=ADMIN_HEADERS)
    assert never.get_json()["fields"] == {"cronExpression": "is a cron expression that matches no date"}
    huge = api.post(BASE, json={**ONE_OFF, "endpointIds": [2**63]}, headers=ADMIN_HEADERS)
    assert huge.status_code == 400 and "endpointIds.0" in huge.get_json()["fields"]
    strict = api.post(BASE, json={**ONE_OFF, "endpointIds": ["1"], "isActive": 1}, headers=ADMIN_HEADERS)
    assert set(strict.get_json()["fields"]) == {"endpointIds.0", "isActive"}
    assert _count(api_app) == 0


@pytest.mark.parametrize("zone", ["Europe", "America"])
def test_a_folder_of_the_zone_database_is_no_time_zone(api, api_app, zone):
    created = api.post(BASE, json={**NIGHTLY, "timeZone": zone}, headers=ADMIN_HEADERS)
    assert created.status_code == 400
    assert created.get_json()["fields"] == {"timeZone": "is not a known time zone: use an IANA name such as "
                                                        "Europe/Berlin, or UTC"}
    window = api.post(BASE, json=NIGHTLY, headers=ADMIN_HEADERS).get_json()
    patched = api.patch(f"{BASE}/{window['id']}", json={"timeZone": zone}, headers=ADMIN_HEADERS)
    assert patched.status_code == 400 and set(patched.get_json()["fields"]) == {"timeZone"}
    assert api.get(f"{BASE}/{window['id']}", headers=ADMIN_HEADERS).get_json()["timeZone"] == "Europe/Berlin"


@pytest.mark.parametrize("cron", ["R 2 * * *", "0 r * * *", "R(0-30) 2 * * *"])
def test_a_random_cron_time_is_refused(api, api_app, cron):
    response = api.post(BASE, json={**NIGHTLY, "cronExpression": cron}, headers=ADMIN_HEADERS)
    assert response.status_code == 400
    assert response.get_json()["fields"] == {
        "cronExpression": "picks a random time (R), which moves each time it is read: give fixed times"}
    assert _count(api_app) == 0
    named = api.post(BASE, json={**NIGHTLY, "cronExpression": "0 2 * MAR FRI"}, headers=ADMIN_HEADERS)
    assert named.status_code == 201, named.get_json()


def test_a_bad_patch_changes_nothing(api):
    created = api.post(BASE, json=ONE_OFF, headers=ADMIN_HEADERS).get_json()
    response = api.patch(f"{BASE}/{created['id']}", json={"endsAt": "2030-05-01T08:00:00Z"}, headers=ADMIN_HEADERS)
    assert response.status_code == 400 and "endsAt" in response.get_json()["fields"]
    assert api.get(f"{BASE}/{created['id']}", headers=ADMIN_HEADERS).get_json()["endsAt"] == created["endsAt"]


def test_a_viewer_reads_but_cannot_change(api):
    created = api.post(BASE, json=ONE_OFF, headers=ADMIN_HEADERS).get_json()
    viewer = basic(*VIEWER)
    assert api.get(BASE, headers=viewer).status_code == 200
    for method, path, body in (("POST", BASE, ONE_OFF), ("PATCH", f"{BASE}/{created['id']}", {"title": "x"}),
                               ("PUT", f"{BASE}/{created['id']}", ONE_OFF), ("DELETE", f"{BASE}/{created['id']}", None)):
        assert api.open(path, method=method, json=body, headers=viewer).status_code == 403, method


def test_a_dependent_refuses_changes(api_app, api):
    created = api.post(BASE, json=ONE_OFF, headers=ADMIN_HEADERS).get_json()
    with api_app.app_context():
        configuration.set_role("dependent", new_epoch=1, new_primary_url="http://primary.test:3002")
        db.session.commit()
    response = api.post(BASE, json=ONE_OFF, headers=ADMIN_HEADERS)
    assert response.status_code == 409 and "primary.test" in response.get_json()["message"]
    assert api.delete(f"{BASE}/{created['id']}", headers=ADMIN_HEADERS).status_code == 409
    assert api.get(BASE, headers=ADMIN_HEADERS).status_code == 200


def test_it_needs_credentials(api):
    assert api.get(BASE).status_code == 401


def test_results_and_endpoints_say_when_they_were_in_maintenance(api_app, api):
    from datetime import datetime, timedelta, timezone

    from app.checks import CheckResult
    from app.services.results import record_results

    now = datetime.now(timezone.utc)
    created = api.post(BASE, json={"title": "Now", "groups": ["Databases"],
                                   "startsAt": (now - timedelta(minutes=10)).isoformat(),
                                   "endsAt": (now + timedelta(minutes=10)).isoformat()}, headers=ADMIN_HEADERS)
    with api_app.app_context():
        for minutes in (30, 5):  # before the window, and in it
            record_results([(1, CheckResult(is_ok=False, check_type="tcp", failure_reason="refused",
                                            checked_at=now - timedelta(minutes=minutes)))],
                           instance_id=configuration.instance_id(), location="lab")
    results = api.get("/api/v1/endpoints/1/results", headers=ADMIN_HEADERS).get_json()["results"]
    assert [r["inMaintenance"] for r in results] == [True, False]  # newest first
    endpoints = api.get("/api/v1/endpoints", headers=ADMIN_HEADERS).get_json()["endpoints"]
    assert {e["name"]: e["maintenanceWindowId"] for e in endpoints} == {
        "Orders DB": created.get_json()["id"], "Shop": None}
