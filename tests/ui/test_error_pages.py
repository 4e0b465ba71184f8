"""Error pages are pages of the site: its stylesheet and icon, its
navigation for a signed-in user, what went wrong and a way back; never a
traceback. The JSON API and the sync API answer errors in JSON; an HTMX
request gets a message fragment. The icon is served by the app."""
from __future__ import annotations

import pytest

from app.extensions import db
from tests.conftest import copy_template, make_app
from tests.ui.conftest import EMAIL, PASSWORD, csrf_token, sign_in

SECRET_DETAIL = "database password is hunter2"


def test_a_missing_page_is_a_page_of_the_site_with_its_navigation(web):
    response = web.get("/no/such/page")
    html = response.get_data(as_text=True)
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "/static/app.css" in html and "/static/favicon.svg" in html
    assert "<h1>Page not found</h1>" in html
    assert "There is nothing at this address" in html
    assert 'href="/notifications"' in html and "Sign out" in html  # the navigation
    assert 'href="/">Back to the dashboard</a>' in html


def test_a_missing_page_for_someone_signed_out_has_no_navigation(client, admin):
    response = client.get("/no/such/page")
    html = response.get_data(as_text=True)
    assert response.status_code == 404
    assert "/static/app.css" in html and "<h1>Page not found</h1>" in html
    assert "Sign out" not in html and 'href="/notifications"' not in html
    assert 'href="/">Go to the dashboard</a>' in html


def test_a_missing_record_says_what_is_missing(web):
    response = web.get("/notifications/987/edit")
    assert response.status_code == 404
    html = response.get_data(as_text=True)
    assert "There is no notification service with id 987." in html and "Sign out" in html


def test_an_htmx_request_gets_a_fragment(web):
    response = web.get("/no/such/page", headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 404
    assert "<html" not in html and 'class="flash error"' in html


def test_a_wrong_method_keeps_its_allow_header(web):
    response = web.put("/notifications")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert "/static/app.css" in response.get_data(as_text=True)


def test_api_errors_stay_json(client, admin):
    response = client.get("/api/v1/no-such-thing", auth=(EMAIL, PASSWORD))
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_sync_api_errors_stay_json(tmp_path, migrated_sqlite_template):
    copy_template(migrated_sqlite_template, tmp_path)
    sync_app = make_app(tmp_path, {"ENABLE_SYNC_API": "true", "SYNC_SHARED_SECRET": "s" * 32}, serve="sync")
    client = sync_app.test_client()
    for path in ("/sync/api/no-such-thing", "/favicon.ico", "/"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.get_json()["error"] == "not_found", path
    with sync_app.app_context():
        db.engine.dispose()


@pytest.fixture
def failing_app(app, admin):
    """The app with one page that fails the way a bug would."""

    def broken():
        raise RuntimeError(SECRET_DETAIL)

    app.add_url_rule("/broken", "broken", broken)
    app.add_url_rule("/api/v1/broken", "api_broken", broken)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: Flask answers 500
    return app


def test_a_server_error_is_a_page_of_the_site_without_a_traceback(failing_app):
    client = failing_app.test_client()
    sign_in(client)
    response = client.get("/broken")
    html = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "/static/app.css" in html and "<h1>Server error</h1>" in html
    assert "Sign out" in html and 'href="/">Back to the dashboard</a>' in html
    assert SECRET_DETAIL not in html and "Traceback" not in html and "RuntimeError" not in html
    api = client.get("/api/v1/broken")
    assert api.status_code == 500 and api.get_json()["error"] == "internal_server_error"
    assert SECRET_DETAIL not in api.get_data(as_text=True)
    assert csrf_token(client, "/")  # the session survived the error


def test_the_icon_is_served_by_the_app_and_linked_from_every_page(client, admin):
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
    assert icon.get_data(as_text=True).lstrip().startswith("<svg")
    assert len(icon.get_data()) < 2048
    legacy = client.get("/favicon.ico")  # asked by browsers whatever the page links, without a session
    assert legacy.status_code == 200 and legacy.mimetype == "image/svg+xml"
    assert legacy.get_data() == icon.get_data()
    login = client.get("/login").get_data(as_text=True)
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in login
