"""API authentication: HTTP basic (a user's email and password) or
``Authorization: Bearer <api key>``."""
from flask import request
from sqlalchemy import select

from app.blueprints.errors import json_error
from app.extensions import basic_auth, db, token_auth
from app.models import API_KEY_PREFIX_LEN, ApiKey, User, utcnow
from app.models.user import API_KEY_PREFIX
from app.services import login_throttle


@basic_auth.verify_password
def verify_password(email, password):
    if not email or not password:
        return None
    email = email.strip().lower()
    ip = request.remote_addr or "unknown"
    # The same limits as the sign-in page, or the API would be the way
    # around them for guessing passwords.
    if login_throttle.retry_after(ip, email) is not None:
        return None
    user = db.session.execute(select(User).where(User.email == email)).scalar_one_or_none()
    if user is None:
        # Hash anyway so a missing user takes as long as a wrong password.
        User(password_hash="").set_password(password)
    elif user.check_password(password):
        return user
    login_throttle.record_failure(ip, email)
    return None


@token_auth.verify_token
def verify_token(token):
    if not token or not token.startswith(API_KEY_PREFIX):
        return None
    prefix = token[len(API_KEY_PREFIX):len(API_KEY_PREFIX) + API_KEY_PREFIX_LEN]
    for key in db.session.execute(select(ApiKey).where(ApiKey.prefix == prefix)).scalars():
        if key.matches(token):
            key.last_used_at = utcnow()
            db.session.commit()
            return key.user
    return None


def _unauthorized(status):
    return json_error(status, "unauthorized", "send HTTP basic credentials or 'Authorization: Bearer <api key>'")


basic_auth.error_handler(_unauthorized)
token_auth.error_handler(_unauthorized)
