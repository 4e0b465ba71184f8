"""Users and API keys."""
from __future__ import annotations

import logging
import os
import re

from sqlalchemy import func, select

from app.extensions import db
from app.models import ApiKey, User, utcnow
from app.services import configuration

logger = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class InvalidAccount(ValueError):
    """Bad account input, or an unknown user or key."""


class SetupDone(InvalidAccount):
    """The first administrator exists already."""


def create_user(email: str, password: str, *, is_admin: bool = False) -> User:
    """Create a user; the email is the login, kept lower-case."""
    user = _add_user(email, password, is_admin=is_admin)
    db.session.commit()
    logger.info("user %s created", user.email)
    return user


def create_first_admin(email: str, password: str) -> User:
    """Create the first administrator, unless any user exists by now.

    Two first-run setups at the same moment (two browsers, or the setup page
    and ADMIN_EMAIL at start) must not both create an admin: the count and
    the insert happen under the instance's write lock.
    """
    configuration.lock_instance()
    if user_count():
        db.session.rollback()
        raise SetupDone("the first administrator has been created already")
    try:
        user = _add_user(email, password, is_admin=True)
    except InvalidAccount:
        db.session.rollback()
        raise
    db.session.commit()
    logger.info("first administrator %s created", user.email)
    return user


def account_errors(email: str, password: str) -> dict[str, str]:
    """What is wrong with a new account's email and password: a message per
    bad field (``email``, ``password``), all of them at once."""
    email = (email or "").strip().lower()
    errors = {}
    if not _EMAIL.match(email) or len(email) > 254:
        errors["email"] = "must be an address like name@example.org"
    elif db.session.execute(select(User.id).where(User.email == email)).first():
        errors["email"] = f"is taken: a user with email {email} exists already"
    if len(password or "") < MIN_PASSWORD_LENGTH:
        errors["password"] = f"must be at least {MIN_PASSWORD_LENGTH} characters"
    return errors


def _add_user(email: str, password: str, *, is_admin: bool) -> User:
    email = (email or "").strip().lower()
    errors = account_errors(email, password)
    if errors:
        raise InvalidAccount("; ".join(f"{field} {message}" for field, message in errors.items()))
    user = User(email=email, is_admin=is_admin)
    user.set_password(password)
    db.session.add(user)
    return user


def user_count() -> int:
    return db.session.execute(select(func.count(User.id))).scalar_one()


def ensure_admin_from_env() -> User | None:
    """Create the admin from ADMIN_EMAIL/ADMIN_PASSWORD if there are no users."""
    email, password = os.environ.get("ADMIN_EMAIL"), os.environ.get("ADMIN_PASSWORD")
    if not email or not password or user_count():
        return None
    try:
        return create_first_admin(email, password)
    except SetupDone:
        return None
    except InvalidAccount as exc:
        raise InvalidAccount(f"ADMIN_EMAIL/ADMIN_PASSWORD: {exc}") from None


def create_api_key(email: str, name: str) -> tuple[ApiKey, str]:
    """Issue a key for the user with ``email``; returns (row, plaintext)."""
    user = db.session.execute(select(User).where(User.email == (email or "").strip().lower())).scalar_one_or_none()
    if user is None:
        raise InvalidAccount(f"no user with email {email}")
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidAccount("name must be 1 to 100 characters")
    row, key = ApiKey.issue(user, name)
    db.session.add(row)
    db.session.commit()
    logger.info("API key %s (%s) created for %s", row.id, name, user.email)
    return row, key


def revoke_api_key(key_id: int) -> None:
    row = db.session.get(ApiKey, key_id)
    if row is None:
        raise InvalidAccount(f"no API key with id {key_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        db.session.commit()
        logger.info("API key %s revoked", key_id)
