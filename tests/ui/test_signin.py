"""Accounts in the browser: first-run setup, sign-in, sign-out, sessions,
rate limiting, CSRF and the sign-in requirement."""
import re

import pytest

from tests.ui.conftest import EMAIL, PASSWORD, csrf_token, post, sign_in


def test_it_sends_every_page_to_setup_before_the_first_user(client):
    for path in ("/", "/endpoints/new", "/api-keys", "/login"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"] == "/setup", path


def test_it_creates_the_admin_on_first_run_and_signs_them_in(client):
    token = csrf_token(client, "/setup")
    response = client.post("/setup", data={"csrf_token": token, "email": "Me@Example.org",
                                           "password": PASSWORD, "password_repeat": PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.get("/setup").status_code == 404  # one time only


@pytest.mark.parametrize("email, password, repeat, field, message", [
    ("not-an-email", PASSWORD, PASSWORD, "email", "Email must be an address like name@example.org"),
    (EMAIL, "short", "short", "password", "Password must be at least 10 characters"),
    (EMAIL, PASSWORD, PASSWORD + "x", "password_repeat", "The two passwords differ"),
])
def test_it_explains_each_setup_mistake_next_to_the_field(client, email, password, repeat, field, message):
    token = csrf_token(client, "/setup")
    response = client.post("/setup", data={"csrf_token": token, "email": email, "password": password,
                                           "password_repeat": repeat})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert message in html
    assert re.search(rf'name="{field}"[^>]*aria-invalid="true"', html, re.S)
    assert client.get("/").headers["Location"] == "/setup"  # nobody was created


def test_it_names_every_setup_mistake_at_once(client):
    token = csrf_token(client, "/setup")
    response = client.post("/setup", data={"csrf_token": token, "email": "not-an-email", "password": "short",
                                           "password_repeat": "shorter"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    for field, message in (("email", "Email must be an address like name@example.org."),
                           ("password", "Password must be at least 10 characters."),
                           ("password_repeat", "The two passwords differ.")):
        assert re.search(rf'name="{field}"[^>]*aria-invalid="true"', html, re.S), field
        assert message in html
    assert client.get("/").headers["Location"] == "/setup"  # nobody was created


def test_it_signs_in_and_out(client, admin):
    response = sign_in(client)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    response = client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    assert response.status_code == 302
    assert client.get("/").status_code == 302


def test_it_refuses_a_wrong_password(client, admin):
    response = sign_in(client, password="wrong password!")
    assert response.status_code == 401
    assert "Wrong email or password." in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_it_rate_limits_sign_in_per_address_and_account(client, admin):
    for _ in range(5):
        assert sign_in(client, password="wrong password!").status_code == 401
    response = sign_in(client)  # right password, but too late
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "Too many failed sign-in attempts" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302
    # Another address is not held back by this one's failures.
    other = client.application.test_client()
    token = csrf_token(other, "/login")
    ok = other.post("/login", data={"csrf_token": token, "email": EMAIL, "password": PASSWORD},
                    environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert ok.status_code == 302


def test_a_head_request_for_the_sign_in_page_is_no_failed_attempt(client, admin):
    from app.services import login_throttle

    for _ in range(login_throttle.MAX_PER_IP):
        assert client.head("/login").status_code == 200
    assert sign_in(client).status_code == 302


def test_it_forgets_failures_after_a_successful_sign_in(client, admin):
    for _ in range(4):
        sign_in(client, password="wrong password!")
    assert sign_in(client).status_code == 302
    client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    for _ in range(4):
        assert sign_in(client, password="wrong password!").status_code == 401
    assert sign_in(client).status_code == 302


def test_it_requires_sign_in_for_every_page_but_the_public_ones(client, admin):
    for path in ("/", "/endpoints/new", "/endpoints/1", "/api-keys", "/notifications", "/status-pages"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next="), path
    assert client.get("/health").status_code == 200
    assert client.get("/login").status_code == 200
    assert client.get("/static/app.css").status_code == 200


def test_it_sends_htmx_requests_to_sign_in_with_a_full_page_redirect(client, admin):
    response = client.get("/?since=2026-01-01T00:00:00%2B00:00", headers={
        "HX-Request": "true", "HX-Current-URL": "http://localhost/?status=DOWN"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?next=/?status%3DDOWN"


def test_it_only_redirects_to_paths_on_this_site_after_sign_in(app, admin):
    def sign_in_then(next_url):
        fresh = app.test_client()  # signing in starts a new session, with a new token
        token = csrf_token(fresh, "/login")
        return fresh.post("/login", data={"csrf_token": token, "email": EMAIL, "password": PASSWORD,
                                          "next": next_url}).headers["Location"]

    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        assert sign_in_then(evil) == "/", evil
    assert sign_in_then("/endpoints/new") == "/endpoints/new"


def test_it_sets_safe_session_cookie_flags(client, admin):
    response = sign_in(client)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Expires=" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback must keep working
    secure = client.application.test_client()
    token = csrf_token(secure, "/login")
    response = secure.post("/login", base_url="https://localhost",
                           headers={"Referer": "https://localhost/login"},
                           data={"csrf_token": token, "email": EMAIL, "password": PASSWORD})
    assert "Secure" in response.headers["Set-Cookie"]


def test_it_ends_sessions_when_the_password_changes(app, web):
    from app.extensions import db
    from app.models import User

    assert web.get("/").status_code == 200
    with app.app_context():
        user = db.session.execute(db.select(User)).scalar_one()
        user.set_password("another long password")
        db.session.commit()
    assert web.get("/").status_code == 302


def test_it_ends_sessions_older_than_the_maximum_age(web):
    with web.session_transaction() as session:
        session["signed_in_at"] -= 8 * 86400
    assert web.get("/").status_code == 302


@pytest.mark.parametrize("path", [
    "/login", "/logout", "/endpoints/new", "/api-keys", "/status-pages", "/notifications/new",
    "/endpoints/1/pause", "/endpoints/1/resume", "/endpoints/1/delete", "/endpoints/1/check",
    "/api-keys/1/revoke", "/notifications/1/test",
])
def test_it_refuses_state_changes_without_a_csrf_token(web, path):
    response = web.post(path, data={"name": "x", "email": EMAIL, "password": PASSWORD})
    assert response.status_code == 400
    assert "CSRF check failed" in response.get_data(as_text=True)
    forged = web.post(path, data={"csrf_token": "forged"})
    assert forged.status_code == 400


def test_it_refuses_htmx_requests_without_the_header_token(web, app):
    from tests.ui.conftest import make_endpoint

    endpoint_id = make_endpoint(app)
    refused = web.post(f"/endpoints/{endpoint_id}/check", headers={"HX-Request": "true"})
    assert refused.status_code == 400
    assert 'class="flash error"' in refused.get_data(as_text=True)
    accepted = web.post(f"/endpoints/{endpoint_id}/check",
                        headers={"HX-Request": "true", "X-CSRFToken": web.token})
    assert accepted.status_code == 200


def test_it_puts_the_token_in_a_meta_tag_and_the_htmx_headers(web):
    html = web.get("/").get_data(as_text=True)
    meta = re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)
    assert f'hx-headers=\'{{"X-CSRFToken": "{meta}"}}\'' in html


def test_the_json_api_needs_no_csrf_token(client, auth_headers):
    response = client.post("/api/v1/endpoints", headers=auth_headers,
                           json={"name": "api", "checkType": "tcp", "target": "127.0.0.1", "port": 9})
    assert response.status_code == 201


def test_it_creates_an_api_key_once_and_revokes_it(web, app):
    response = post(web, "/api-keys", {"name": "ci"})
    html = response.get_data(as_text=True)
    key = re.search(r'<code id="new-key">([^<]+)</code>', html).group(1)
    assert key.startswith("epm_")
    assert key not in web.get("/api-keys").get_data(as_text=True)  # never shown again
    api = app.test_client()
    assert api.get("/api/v1/endpoints", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    key_id = re.search(r'/api-keys/(\d+)/revoke', html).group(1)
    assert post(web, f"/api-keys/{key_id}/revoke").status_code == 303
    assert api.get("/api/v1/endpoints", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_it_explains_a_bad_api_key_name(web):
    response = post(web, "/api-keys", {"name": "  "})
    assert response.status_code == 422
    assert "Name must be 1 to 100 characters." in response.get_data(as_text=True)


@pytest.mark.parametrize("target", ["/\t/evil.example", "/%0d%0a/x", "/\\evil.example", "//evil.example",
                                    "https://evil.example/", "/\x00/x", " /x"])
def test_it_never_redirects_off_the_site_after_sign_in(web, target):
    from urllib.parse import urlsplit

    for response in (web.get("/login", query_string={"next": target}),
                     web.get(f"/login?next={target}")):  # as typed, so %09 decodes to a tab
        location = response.headers.get("Location", "")
        parts = urlsplit(location)
        assert response.status_code in {200, 302}
        assert not parts.scheme and not parts.netloc and not location.startswith("//")
        assert not any(ord(c) < 32 or c == "\\" for c in location)


def test_it_sends_an_encoded_tab_trick_to_the_dashboard(web):
    response = web.get("/login?next=/%09/evil.example")
    assert response.status_code == 302
    assert "evil" not in response.headers["Location"]


def _race_first_admins(apps) -> list[str]:
    """Each app (its own engine, like its own process) tries to create the
    first admin at the same moment; returns what each attempt ended in."""
    import threading

    from app.services import accounts

    start, outcomes = threading.Barrier(len(apps)), []

    def attempt(number, application):
        with application.app_context():
            start.wait()
            try:
                accounts.create_first_admin(f"admin{number}@example.org", PASSWORD)
                outcomes.append("created")
            except accounts.SetupDone:
                outcomes.append("refused")

    threads = [threading.Thread(target=attempt, args=pair) for pair in enumerate(apps)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return sorted(outcomes)


def _users(application) -> list[tuple[str, bool]]:
    from app.extensions import db
    from app.models import User

    with application.app_context():
        return [(u.email, u.is_admin) for u in db.session.execute(db.select(User)).scalars()]


def test_two_setups_at_once_create_one_admin_on_sqlite(app, tmp_path):
    from tests.conftest import make_app

    rival = make_app(tmp_path)
    assert _race_first_admins([app, rival, make_app(tmp_path)]) == ["created", "refused", "refused"]
    assert len(_users(app)) == 1


def test_two_setups_at_once_create_one_admin_on_postgresql(pg_app, tmp_path, postgres_url):
    from tests.conftest import make_app

    rivals = [make_app(tmp_path / str(n), {"DATABASE_URL": postgres_url}) for n in range(2)]
    assert _race_first_admins([pg_app, *rivals]) == ["created", "refused", "refused"]
    assert len(_users(pg_app)) == 1


def test_a_setup_page_left_open_sends_to_sign_in_once_someone_else_set_up(client, app, tmp_path):
    from app.services import accounts
    from tests.conftest import make_app

    token = csrf_token(client, "/setup")
    with make_app(tmp_path).app_context():  # another process, which this one has not heard of
        accounts.create_first_admin("first@example.org", PASSWORD)
    response = client.post("/setup", data={"csrf_token": token, "email": EMAIL, "password": PASSWORD,
                                           "password_repeat": PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert "created already: sign in instead" in client.get("/login").get_data(as_text=True)
    assert _users(app) == [("first@example.org", True)]


def test_pages_refuse_framing_and_sniffing_but_status_pages_may_be_embedded(web, app):
    page = web.get("/")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    login = app.test_client().get("/login")
    assert login.headers["X-Frame-Options"] == "DENY"
    status = app.test_client().get("/status/nothing-published")
    assert "X-Frame-Options" not in status.headers and status.headers["X-Content-Type-Options"] == "nosniff"


def test_the_session_cookie_is_named_after_the_port(app, admin):
    client = app.test_client()
    response = sign_in(client)
    port = app.config["SETTINGS"].port
    assert f"monitor_session_{port}=" in response.headers["Set-Cookie"]
