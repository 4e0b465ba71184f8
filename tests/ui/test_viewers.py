"""A user who is not an administrator sees everything and changes nothing."""
import base64

from app.extensions import db
from app.models import Endpoint
from tests.ui.conftest import csrf_token, make_endpoint, post, sign_in

VIEWER = ("viewer@example.org", "viewer password 123")


def viewer_client(app):
    from app.services.accounts import create_user

    with app.app_context():
        create_user(*VIEWER, is_admin=False)
    client = app.test_client()
    assert sign_in(client, *VIEWER).status_code == 302
    client.token = csrf_token(client, "/")
    return client


def test_a_viewer_sees_the_dashboard_without_controls_that_change_things(app, admin):
    endpoint_id = make_endpoint(app, name="web")
    client = viewer_client(app)
    page = client.get("/").get_data(as_text=True)
    assert "web" in page and "Add endpoint" not in page
    assert "this instance is a dependent" not in page
    detail = client.get(f"/endpoints/{endpoint_id}").get_data(as_text=True)
    assert "Delete" not in detail


def test_a_viewer_cannot_change_configuration(app, admin):
    endpoint_id = make_endpoint(app, name="web")
    client = viewer_client(app)
    assert post(client, f"/endpoints/{endpoint_id}/delete").status_code == 403
    assert post(client, f"/endpoints/{endpoint_id}/pause").status_code == 403
    assert client.get("/endpoints/new").status_code == 403
    with app.app_context():
        endpoint = db.session.get(Endpoint, endpoint_id)
        assert endpoint is not None and not endpoint.is_paused


def test_a_viewer_reads_but_cannot_write_through_the_api(app, admin):
    endpoint_id = make_endpoint(app, name="web")
    viewer_client(app)
    client = app.test_client()
    headers = {"Authorization": "Basic " + base64.b64encode(":".join(VIEWER).encode()).decode()}
    assert client.get("/api/v1/endpoints", headers=headers).status_code == 200
    assert client.delete(f"/api/v1/endpoints/{endpoint_id}", headers=headers).status_code == 403
    response = client.post("/api/v1/endpoints", headers=headers,
                           json={"name": "x", "checkType": "tcp", "target": "127.0.0.1", "port": 1})
    assert response.status_code == 403
    with app.app_context():
        assert db.session.query(Endpoint).count() == 1


def test_a_viewer_cannot_read_stored_options_through_the_form_fragment(app, admin):
    endpoint_id = make_endpoint(app, name="web", options={"headers": {"Authorization": "Bearer s3cret-token"},
                                                          "method": "POST", "body": "private body"})
    client = viewer_client(app)
    response = client.get(f"/endpoints/form-options?checkType=http&endpoint={endpoint_id}",
                          headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 403
    assert "s3cret-token" not in html and "private body" not in html
