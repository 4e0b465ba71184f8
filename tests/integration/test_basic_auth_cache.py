"""The JSON API's basic auth remembers verified credentials for a while
(``accounts.VerifiedCredentials``), so a script's requests do not each pay
for scrypt: only successes, only while the user's stored password hash is
the one they matched (a change in this process or any other stops the old
password at once), never past the sign-in limits."""
import base64
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import LoginFailure, User
from app.services import accounts
from tests.conftest import ROOT

EMAIL, PASSWORD = "admin@example.org", "correct horse battery"


def basic(email, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


def status(app, password, email=EMAIL):
    return app.test_client().get("/api/v1/endpoints", headers=basic(email, password)).status_code


@pytest.fixture
def scrypt_runs(monkeypatch):
    """How many times a password is checked against its scrypt hash (the real check, counted)."""
    runs = []
    check = User.check_password

    def counted(self, password):
        runs.append(password)
        return check(self, password)

    monkeypatch.setattr(User, "check_password", counted)
    return runs


def set_password(app, password):
    with app.app_context():
        user = db.session.execute(select(User).where(User.email == EMAIL)).scalar_one()
        user.set_password(password)
        db.session.commit()


def failures(app) -> int:
    with app.app_context():
        return db.session.execute(select(func.count(LoginFailure.id))).scalar_one()


def test_it_checks_a_password_once_and_then_remembers_it(app, user, scrypt_runs):
    assert [status(app, PASSWORD) for _ in range(5)] == [200] * 5
    assert scrypt_runs == [PASSWORD]


def test_it_keeps_a_digest_never_the_password(app, user):
    assert status(app, PASSWORD) == 200
    verified = app.extensions["monitor_verified_credentials"]
    held = repr(verified._entries).encode() + b"".join(verified._entries)
    assert len(verified._entries) == 1 and PASSWORD.encode() not in held and b"correct" not in held


def test_a_wrong_password_is_never_remembered(app, user, scrypt_runs):
    assert [status(app, "wrong password 1"), status(app, "wrong password 1")] == [401, 401]
    assert scrypt_runs == ["wrong password 1"] * 2 and failures(app) == 2
    assert status(app, PASSWORD) == 200
    assert status(app, "wrong password 1") == 401  # a remembered success lets no other password in
    assert failures(app) == 3


def test_a_password_changed_here_stops_the_old_one_at_once(app, user):
    assert status(app, PASSWORD) == 200
    set_password(app, "a new password entirely")
    assert status(app, PASSWORD) == 401
    assert status(app, "a new password entirely") == 200


def test_a_password_changed_by_another_process_stops_the_old_one_at_once(app, user):
    """Each request reads the user's stored hash, so no process needs telling."""
    assert status(app, PASSWORD) == 200
    env = {**os.environ, "DATA_DIR": str(app.config["SETTINGS"].data_dir),
           "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"], "SECRET_KEY": "test-secret-key-0123456789"}
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "-c", (
        "from sqlalchemy import select\n"
        "from app import create_app\n"
        "from app.extensions import db\n"
        "from app.models import User\n"
        "with create_app(serve='none').app_context():\n"
        f"    user = db.session.execute(select(User).where(User.email == {EMAIL!r})).scalar_one()\n"
        "    user.set_password('changed in another process')\n"
        "    db.session.commit()\n")], cwd=ROOT, env=env, check=True, timeout=60)
    assert status(app, PASSWORD) == 401
    assert status(app, "changed in another process") == 200


def test_a_removed_user_is_refused_at_once(app, user):
    assert status(app, PASSWORD) == 200
    with app.app_context():
        db.session.delete(db.session.execute(select(User).where(User.email == EMAIL)).scalar_one())
        db.session.commit()
    assert status(app, PASSWORD) == 401


def test_remembered_credentials_expire(app, user, scrypt_runs):
    app.extensions["monitor_verified_credentials"] = accounts.VerifiedCredentials(ttl=0.0)
    assert [status(app, PASSWORD), status(app, PASSWORD)] == [200, 200]
    assert scrypt_runs == [PASSWORD, PASSWORD]


def test_the_least_recently_used_credentials_go_first(app, user, scrypt_runs):
    from app.services.accounts import create_user

    with app.app_context():
        create_user("second@example.org", "second password 12")
    app.extensions["monitor_verified_credentials"] = accounts.VerifiedCredentials(size=1)
    assert status(app, PASSWORD) == 200
    assert status(app, "second password 12", email="second@example.org") == 200
    assert status(app, PASSWORD) == 200
    assert scrypt_runs == [PASSWORD, "second password 12", PASSWORD]


def test_the_sign_in_limits_hold_for_remembered_credentials(app, user):
    assert status(app, PASSWORD) == 200
    for _ in range(5):
        assert status(app, "wrong password 1") == 401
    assert status(app, PASSWORD) == 401  # over the limit: not even a remembered password
