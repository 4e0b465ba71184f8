"""API authentication: HTTP basic (a user's email and password) or
``Authorization: Bearer <api key>``."""
from flask import request
from sqlalchemy import select

from app.blueprints.errors import json_error
from app.extensions import basic_auth, db, token_auth
from app.models import API_KEY_PREFIX_LEN, ApiKey, utcnow
from app.models.user import API_KEY_PREFIX
from app.services import accounts


@basic_auth.verify_password
def verify_password(email, password):
    return accounts.authenticate(email, password, request.remote_addr or "unknown")


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
