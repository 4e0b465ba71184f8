"""Notification service pages on top of app.services.notifications: forms
with errors next to fields, secrets never shown back, a test sent inline."""
import re

from app.extensions import db
from app.models import Endpoint, NotificationService
from tests.ui.conftest import make_endpoint, post
from tests.ui.test_viewers import viewer_client


def test_it_adds_a_webhook_and_never_shows_its_secrets_again(web, app, httpserver):
    url = httpserver.url_for("/hook/s3cr3t-token")
    response = post(web, "/notifications/new", {"name": "Ops hook", "kind": "webhook", "url": url,
                                                "headers": "Authorization: Bearer abc123", "isEnabled": "on"})
    assert response.status_code == 303
    listing = web.get("/notifications").get_data(as_text=True)
    assert "Ops hook" in listing and "s3cr3t-token" not in listing and "abc123" not in listing
    with app.app_context():
        service_id = db.session.execute(db.select(NotificationService.id)).scalar_one()
    edit = web.get(f"/notifications/{service_id}/edit").get_data(as_text=True)
    assert "s3cr3t-token" not in edit and "leave blank to keep" in edit
    # Saving with the secrets left blank keeps them.
    assert post(web, f"/notifications/{service_id}/edit", {"name": "Ops", "kind": "webhook",
                                                             "isEnabled": "on"}).status_code == 303
    with app.app_context():
        service = db.session.get(NotificationService, service_id)
        assert service.name == "Ops" and service.config["url"] == url
        assert service.config["headers"] == {"Authorization": "Bearer abc123"}


def test_it_shows_service_errors_next_to_the_fields(web):
    response = post(web, "/notifications/new", {"name": "", "kind": "webhook", "url": "ftp://nope",
                                                "headers": "no colon"})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Each line must be &#39;Name: value&#39;" in html
    response = post(web, "/notifications/new", {"name": "", "kind": "webhook", "url": "ftp://nope"})
    html = response.get_data(as_text=True)
    assert re.search(r'name="url"[^>]*aria-invalid="true"', html, re.S)
    assert "Must be a URL starting with http:// or https://" in html
    assert re.search(r'name="name"[^>]*aria-invalid="true"', html, re.S)


def test_send_test_shows_the_outcome_inline(web, app, httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    post(web, "/notifications/new", {"name": "Hook", "kind": "webhook", "url": httpserver.url_for("/hook"),
                                     "isEnabled": "on"})
    with app.app_context():
        service_id = db.session.execute(db.select(NotificationService.id)).scalar_one()
    response = web.post(f"/notifications/{service_id}/test", headers={"HX-Request": "true", "X-CSRFToken": web.token})
    assert response.status_code == 200 and "Test message sent." in response.get_data(as_text=True)
    assert len(httpserver.log) == 1
    httpserver.clear()
    httpserver.expect_request("/hook", method="POST").respond_with_data("no", status=500)
    failed = web.post(f"/notifications/{service_id}/test", headers={"HX-Request": "true", "X-CSRFToken": web.token})
    assert "Test failed" in failed.get_data(as_text=True)
    assert "sent" in web.get("/notifications").get_data(as_text=True)


def _hook(web, app, httpserver) -> int:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    post(web, "/notifications/new", {"name": "Hook", "kind": "webhook", "url": httpserver.url_for("/hook"),
                                     "isEnabled": "on"})
    with app.app_context():
        return db.session.execute(db.select(NotificationService.id)).scalar_one()


def test_a_viewer_cannot_send_a_test(web, app, httpserver):
    service_id = _hook(web, app, httpserver)
    viewer = viewer_client(app)
    assert "Send test" not in viewer.get("/notifications").get_data(as_text=True)
    response = viewer.post(f"/notifications/{service_id}/test",
                           headers={"HX-Request": "true", "X-CSRFToken": viewer.token})
    assert response.status_code == 403
    assert httpserver.log == []


def test_a_dependent_sends_no_test(web, app, httpserver):
    from app.services import configuration

    service_id = _hook(web, app, httpserver)
    with app.app_context():
        configuration.set_role("dependent", new_epoch=1, new_primary_url="http://primary.test:3002")
        db.session.commit()
    response = post(web, f"/notifications/{service_id}/test")
    assert response.status_code == 409 and "http://primary.test:3002" in response.get_data(as_text=True)
    assert httpserver.log == []


def test_an_endpoint_form_chooses_its_services(web, app, httpserver):
    post(web, "/notifications/new", {"name": "Default hook", "kind": "webhook", "url": httpserver.url_for("/h"),
                                     "isEnabled": "on", "isDefault": "on"})
    with app.app_context():
        service_id = db.session.execute(db.select(NotificationService.id)).scalar_one()
    form = web.get("/endpoints/new").get_data(as_text=True)
    assert re.search(rf'name="notificationServices" value="{service_id}" checked', form)
    endpoint_id = make_endpoint(app)
    response = post(web, f"/endpoints/{endpoint_id}/edit", {
        "name": "Site", "checkType": "http", "target": "http://127.0.0.1:9/", "intervalSeconds": "60",
        "timeoutSeconds": "10", "notificationServices": str(service_id)})
    assert response.status_code == 302
    with app.app_context():
        assert [s.id for s in db.session.get(Endpoint, endpoint_id).notification_services] == [service_id]
