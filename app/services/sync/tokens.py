"""Per-instance access tokens for the sync API.

A token is signed with itsdangerous (so forged tokens are refused before any
database read), carries the instance id, a random id, its permissions and
its expiry. The primary stores only the token's SHA-256, compares it in
constant time, and refuses tokens that are expired, revoked, or whose
instance was deleted.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import delete, select, update

from app.extensions import db
from app.models import InstanceToken, MonitoringInstance, utcnow

logger = logging.getLogger(__name__)

TOKEN_TTL_SECONDS = 24 * 3600
# A token with less than this fraction of its life left is renewed in the
# next heartbeat reply.
RENEW_WHEN_LEFT = 1 / 3
# last_used_at is written at most this often, so heartbeats don't each write it.
LAST_USED_RESOLUTION = timedelta(seconds=60)
PERMISSIONS = "sync"


@dataclass(frozen=True)
class VerifiedToken:
    instance_id: str
    token_id: int
    expires_at: datetime

    def needs_renewal(self, now: datetime | None = None) -> bool:
        now = now or utcnow()
        ttl = current_app.config.get("SYNC_TOKEN_TTL", TOKEN_TTL_SECONDS)
        return (self.expires_at - now).total_seconds() < ttl * RENEW_WHEN_LEFT


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="sync-token")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(instance_id: str, *, ttl: int | None = None) -> tuple[str, datetime]:
    """Make a token for ``instance_id`` and store its hash; the caller commits."""
    ttl = ttl if ttl is not None else current_app.config.get("SYNC_TOKEN_TTL", TOKEN_TTL_SECONDS)
    expires_at = utcnow() + timedelta(seconds=ttl)
    token = _serializer().dumps({
        "iid": instance_id,
        "jti": secrets.token_urlsafe(16),
        "perm": PERMISSIONS,
        "exp": int(expires_at.timestamp()),
    })
    db.session.add(InstanceToken(instance_id=instance_id, token_hash=token_hash(token),
                                 permissions=PERMISSIONS, expires_at=expires_at))
    return token, expires_at


def verify(token: str) -> VerifiedToken | None:
    """The token's instance if the token is genuine, live and not revoked."""
    row = _stored(token)
    now = utcnow()
    if row is None or row.expires_at <= now:
        return None
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
        db.session.commit()
    return VerifiedToken(row.instance_id, row.id, row.expires_at)


def owner_of(token: str | None) -> str | None:
    """The instance a genuine, unrevoked token was issued to, expired or not.

    Proof of identity when an instance registers again (say, after its token
    expired while the primary was away); never a way in to other routes.
    """
    row = _stored(token, expired=True)
    return row.instance_id if row is not None else None


def _stored(token: str | None, *, expired: bool = False) -> InstanceToken | None:
    """The stored row of a genuine, unrevoked token of an existing instance;
    with ``expired``, also one whose expiry has passed."""
    if not token or len(token) > 1024:
        return None
    try:
        claims = _serializer().loads(token)
    except BadSignature:
        return None
    if not isinstance(claims, dict) or claims.get("perm") != PERMISSIONS:
        return None
    if not expired and (not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time()):
        return None
    digest = token_hash(token)
    row = db.session.execute(
        select(InstanceToken).join(MonitoringInstance, MonitoringInstance.id == InstanceToken.instance_id)
        .where(InstanceToken.token_hash == digest)
    ).scalar_one_or_none()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    if row.revoked_at is not None or row.instance_id != claims.get("iid"):
        return None
    return row


def renewed_since(token: VerifiedToken, moment: datetime) -> bool:
    """Whether a live token newer than ``token`` was issued to its instance
    at or after ``moment``."""
    return db.session.execute(
        select(InstanceToken.id).where(InstanceToken.instance_id == token.instance_id,
                                       InstanceToken.id > token.token_id, InstanceToken.revoked_at.is_(None),
                                       InstanceToken.issued_at >= moment)
        .limit(1)
    ).first() is not None


def prune(now: datetime | None = None, *, keep: timedelta = timedelta(days=1)) -> int:
    """Delete tokens that expired or were revoked more than ``keep`` ago:
    they can never verify again, and their rows only pile up."""
    cutoff = (now or utcnow()) - keep
    return db.session.execute(
        delete(InstanceToken).where((InstanceToken.expires_at < cutoff) | (InstanceToken.revoked_at < cutoff))
    ).rowcount


def revoke_all(instance_id: str) -> int:
    """Revoke every live token of an instance; the caller commits."""
    return db.session.execute(
        update(InstanceToken)
        .where(InstanceToken.instance_id == instance_id, InstanceToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    ).rowcount
