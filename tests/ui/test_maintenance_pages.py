"""The maintenance page: a window added through the form (CSRF, times read in
the chosen zone), errors beside their fields with nothing stored, edit and
delete, and viewers and dependents shown the list without controls."""
import re
from datetime import datetime, timezone

from app.extensions import db
from app.models import MaintenanceWindow
from tests.ui.conftest import make_endpoint, post
from tests.ui.test_viewers import viewer_client


def _windows(app) -> list[MaintenanceWindow]:
    with app.app_context():
        rows = db.session.execute(db.select(MaintenanceWindow).order_by(MaintenanceWindow.id)).scalars().all()
        db.session.expunge_all()
        return rows


def test_it_adds_a_one_off_window_read_in_its_time_zone(web, app):
    endpoint_id = make_endpoint(app, name="Orders DB", group="Databases")
    response = post(web, "/maintenance/new", {
        "title": "Database upgrade", "kind": "oneOff", "startsAt": "2030-07-01T22:00", "endsAt": "2030-07-02T01:30",
        "timeZone": "Europe/Berlin", "endpointIds": [str(endpoint_id)], "isActive": "on",
        # The other kind's fields are ignored when this kind is chosen.
        "cronExpression": "not cron", "durationMinutes": "60"})
    assert response.status_code == 303, response.get_data(as_text=True)
    [window] = _windows(app)
    assert window.starts_at == datetime(2030, 7, 1, 20, tzinfo=timezone.utc)  # 22:00 summer time in Berlin
    assert window.ends_at == datetime(2030, 7, 1, 23, 30, tzinfo=timezone.utc)
    assert window.cron_expression is None and window.endpoint_ids == [endpoint_id]
    listing = web.get("/maintenance").get_data(as_text=True)
    assert "Database upgrade" in listing and "Orders DB" in listing and "next 2030-07-01 20:00 UTC" in listing
    edit = web.get(f"/maintenance/{window.id}/edit").get_data(as_text=True)
    assert 'value="2030-07-01T22:00"' in edit and 'value="Europe/Berlin"' in edit


def test_it_adds_a_recurring_window_for_a_group_and_edits_it(web, app):
    make_endpoint(app, name="Orders DB", group="Databases")
    assert post(web, "/maintenance/new", {"title": "Backups", "kind": "recurring", "cronExpression": "30 2 * * *",
                                          "durationMinutes": "45", "timeZone": "UTC", "groups": ["Databases"],
                                          "isActive": "on"}).status_code == 303
    [window] = _windows(app)
    assert (window.cron_expression, window.duration_minutes, window.group_names) == ("30 2 * * *", 45, ["Databases"])
    assert post(web, f"/maintenance/{window.id}/edit", {
        "title": "Backups", "kind": "recurring", "cronExpression": "0 3 * * 0", "durationMinutes": "90",
        "timeZone": "UTC", "groups": ["Databases"]}).status_code == 303
    [window] = _windows(app)
    assert (window.cron_expression, window.duration_minutes, window.is_active) == ("0 3 * * 0", 90, False)
    assert "(off)" in web.get("/maintenance").get_data(as_text=True)
    assert post(web, f"/maintenance/{window.id}/delete").status_code == 303
    assert _windows(app) == []


def test_it_shows_errors_beside_the_fields_and_stores_nothing(web, app):
    make_endpoint(app, name="Orders DB")
    response = post(web, "/maintenance/new", {"title": "", "kind": "recurring", "cronExpression": "every night",
                                              "durationMinutes": "0", "timeZone": "Moon/Base"})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Cron expression is not a valid cron expression" in html
    assert "Time zone is not a known time zone" in html
    assert "Duration must be between 1 and 44640 minutes" in html
    assert "Endpoints must name at least one endpoint, or give groups" in html
    assert re.search(r'name="title"[^>]*aria-invalid="true"', html, re.S)
    assert 'value="every night"' in html  # what was typed stays
    backwards = post(web, "/maintenance/new", {"title": "x", "kind": "oneOff", "startsAt": "2030-07-02T10:00",
                                               "endsAt": "2030-07-02T09:00", "endpointIds": ["1"]})
    assert "End must be after the start" in backwards.get_data(as_text=True)
    assert _windows(app) == []


def test_the_form_needs_its_csrf_token(web, app):
    make_endpoint(app, name="Orders DB")
    response = web.post("/maintenance/new", data={"title": "x", "kind": "oneOff", "startsAt": "2030-07-02T10:00",
                                                  "endsAt": "2030-07-02T11:00", "endpointIds": ["1"]})
    assert response.status_code == 400
    assert _windows(app) == []


def test_viewers_and_dependents_see_the_list_without_controls(web, app):
    make_endpoint(app, name="Orders DB")
    post(web, "/maintenance/new", {"title": "Upgrade", "kind": "oneOff", "startsAt": "2030-07-02T10:00",
                                   "endsAt": "2030-07-02T11:00", "endpointIds": ["1"], "isActive": "on"})
    [window] = _windows(app)
    viewer = viewer_client(app)
    page = viewer.get("/maintenance").get_data(as_text=True)
    assert "Upgrade" in page and "Add window" not in page and "Delete" not in page
    assert post(viewer, f"/maintenance/{window.id}/delete").status_code == 403

    from app.services import configuration

    with app.app_context():
        configuration.set_role("dependent", new_epoch=1, new_primary_url="http://primary.test:3002")
        db.session.commit()
    page = web.get("/maintenance").get_data(as_text=True)
    assert "Upgrade" in page and "Add window" not in page
    assert post(web, "/maintenance/new", {"title": "Mine"}).status_code == 409
    assert len(_windows(app)) == 1


def _window_now(app, **fields) -> int:
    from datetime import timedelta

    from app.services import maintenance

    now = datetime.now(timezone.utc)
    with app.app_context():
        return maintenance.create_window({"startsAt": (now - timedelta(minutes=5)).isoformat(),
                                          "endsAt": (now + timedelta(minutes=55)).isoformat(), **fields}).id


def test_the_dashboard_marks_endpoints_in_maintenance(web, app):
    from tests.ui.conftest import add_result

    orders = make_endpoint(app, name="Orders DB", group="Databases")
    make_endpoint(app, name="Shop")
    _window_now(app, title="Vacuum", groups=["Databases"])
    add_result(app, orders, ok=False, reason="refused")
    html = web.get("/").get_data(as_text=True)
    rows = dict(re.findall(r'<tr id="endpoint-(\d+)"(.*?)</tr>', html, re.S))
    assert 'class="badge maintenance"' in rows[str(orders)] and "“Vacuum”" in rows[str(orders)]
    assert "maintenance" not in rows[str(orders + 1)]


def test_a_status_page_shows_a_maintenance_notice(web, app):
    from datetime import timedelta

    from app.services import maintenance
    from tests.ui.conftest import add_result

    orders = make_endpoint(app, name="Orders DB", group="Databases")
    assert post(web, "/status-pages", {"group": "Databases", "publish": "1"}).status_code == 303
    anonymous = app.test_client()
    calm = anonymous.get("/status/databases").get_data(as_text=True)
    assert "maintenance-notice" not in calm

    window_id = _window_now(app, title="Storage migration", description="Writes may be slow", groups=["Databases"])
    add_result(app, orders, ok=False, reason="refused")
    html = anonymous.get("/status/databases").get_data(as_text=True)
    assert "Maintenance in progress: Storage migration" in html and "Writes may be slow" in html
    # Down inside the window: the headline says maintenance, not an outage.
    assert "Some systems are down" not in html and 'overall-maintenance' in html
    with app.app_context():
        window = maintenance.get_window(window_id)
        now = datetime.now(timezone.utc)
        maintenance.update_window(window, {"startsAt": (now + timedelta(days=1)).isoformat(),
                                           "endsAt": (now + timedelta(days=1, hours=2)).isoformat()}, partial=True)
    later = anonymous.get("/status/databases").get_data(as_text=True)
    assert "Scheduled maintenance: Storage migration" in later and "Some systems are down" in later
