"""Users and API keys."""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict

from flask import current_app
from sqlalchemy import func, select

from app.extensions import db
from app.models import ApiKey, User, utcnow
from app.services import configuration, login_throttle

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


# --- the JSON API's basic auth ----------------------------------------------------

# How long verified credentials are taken without scrypt again, and how many are kept.
VERIFIED_SECONDS = 60.0
VERIFIED_MAX = 256


def authenticate(email: str | None, password: str | None, ip: str) -> User | None:
    """The user whose email and password these are (HTTP basic auth), or None.

    The sign-in page's limits apply first (``login_throttle``), or the API
    would be the way around them for guessing passwords. Credentials
    verified within ``VERIFIED_SECONDS`` skip scrypt (about 90 ms) while the
    user's stored password hash is still the one they were verified against
    (``VerifiedCredentials``); a failure is never remembered.
    """
    if not email or not password:
        return None
    email = email.strip().lower()
    if login_throttle.retry_after(ip, email) is not None:
        return None
    user = db.session.execute(select(User).where(User.email == email)).scalar_one_or_none()
    verified = _verified_credentials()
    if user is not None and verified.holds(email, password, user):
        return user
    if user is None:
        # Hash anyway so a missing user takes as long as a wrong password.
        User(password_hash="").set_password(password)
    elif user.check_password(password):
        verified.remember(email, password, user)
        return user
    login_throttle.record_failure(ip, email)
    return None


def _verified_credentials() -> VerifiedCredentials:
    # One per app (so per process, and per test's app).
    return current_app.extensions.setdefault("monitor_verified_credentials", VerifiedCredentials())


class VerifiedCredentials:
    """Basic-auth credentials this process verified lately: a small LRU.

    1. An entry's key is an HMAC-SHA256 of the email and password under a
       key made for this process: the password is never kept, and a key
       means nothing outside the process.
    2. An entry holds the user's id and a digest of the password hash the
       credentials matched. It counts only while the user read for this
       request still has that id and hash (compared in constant time), so a
       changed password or a removed user stops the old credentials at once,
       in every process: each one reads the user on every request anyway.
    3. Only successes are remembered, for ``ttl`` seconds, at most ``size``
       of them (the least recently used go first).
    """

    def __init__(self, ttl: float = VERIFIED_SECONDS, size: int = VERIFIED_MAX):
        self.ttl = ttl
        self.size = size
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[int, bytes, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _entry_key(self, email: str, password: str) -> bytes:
        # Length-prefixed, so no other email and password give the same message.
        message = f"{len(email)}:{email}:{password}".encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    @staticmethod
    def _fingerprint(user: User) -> bytes:
        return hashlib.sha256(user.password_hash.encode()).digest()

    def holds(self, email: str, password: str, user: User) -> bool:
        """Whether these credentials were verified for ``user``, as it is now, within the TTL."""
        key = self._entry_key(email, password)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            user_id, fingerprint, expires = entry
            if expires <= time.monotonic():
                del self._entries[key]
                return False
            self._entries.move_to_end(key)
        if user.id == user_id and hmac.compare_digest(fingerprint, self._fingerprint(user)):
            return True
        with self._lock:
            self._entries.pop(key, None)  # verified against a password since changed
        return False

    def remember(self, email: str, password: str, user: User) -> None:
        """Keep credentials just verified for ``user``."""
        key = self._entry_key(email, password)
        with self._lock:
            self._entries[key] = (user.id, self._fingerprint(user), time.monotonic() + self.ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
