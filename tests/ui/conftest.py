"""Fixtures for the UI: a signed-in test client and CSRF tokens."""
from __future__ import annotations

import re

import pytest

from app.extensions import db

EMAIL, PASSWORD = "admin@example.org", "correct horse battery"
_TOKEN = re.compile(r'name="csrf[-_]token" (?:value|content)="([^"]+)"')


def csrf_token(client, path: str = "/login") -> str:
    """The CSRF token a page of ``path`` carries for this client's session."""
    page = client.get(path)
    match = _TOKEN.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path} ({page.status_code})"
    return match.group(1)


def sign_in(client, email: str = EMAIL, password: str = PASSWORD):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"csrf_token": token, "email": email, "password": password})


@pytest.fixture
def admin(app):
    from app.services.accounts import create_user

    with app.app_context():
        return create_user(EMAIL, PASSWORD, is_admin=True).id


@pytest.fixture
def web(app, admin):
    """A client signed in as the admin, with a helper to post with a token."""
    client = app.test_client()
    response = sign_in(client)
    assert response.status_code == 302, response.get_data(as_text=True)
    client.token = csrf_token(client, "/")
    return client


def post(client, path, data=None, **kwargs):
    """POST a form with the client's CSRF token."""
    return client.post(path, data={"csrf_token": client.token, **(data or {})}, **kwargs)


def make_endpoint(app, **fields):
    from app.services.endpoints import create_endpoint

    data = {"name": "Site", "checkType": "http", "target": "http://127.0.0.1:9/", **fields}
    with app.app_context():
        return create_endpoint(data).id


def add_result(app, endpoint_id, *, ok=True, ms=12.0, at=None, reason=None, metadata=None):
    from app.checks import CheckResult
    from app.services.results import record_results

    with app.app_context():
        result = CheckResult(is_ok=ok, check_type="http", response_time_ms=ms if ok else None,
                             failure_reason=reason if not ok else None, metadata=metadata or {})
        if at is not None:
            result.checked_at = at
        from app.services import configuration

        # Made here, as a worker of this instance would store it.
        record_results([(endpoint_id, result)], instance_id=configuration.instance_id(), location="lab")
        db.session.remove()
