"""Rate limiting of sign-in attempts, by address and by account.

Failures are rows in ``login_failures`` (the database every web process
shares, so the limit holds across gunicorn workers and without Redis). An
address may fail ``MAX_PER_IP_AND_EMAIL`` times for one account and
``MAX_PER_IP`` times in all within ``WINDOW``; while over the limit the
password is not even checked. A successful sign-in clears that address's
failures for that account.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from app.extensions import db
from app.models import LoginFailure, utcnow

logger = logging.getLogger(__name__)

WINDOW = timedelta(minutes=15)
MAX_PER_IP_AND_EMAIL = 5
MAX_PER_IP = 20


def retry_after(ip: str, email: str, now: datetime | None = None) -> int | None:
    """Seconds until ``ip`` may try ``email`` again, or None if it may now."""
    now = now or utcnow()
    since = now - WINDOW
    email = (email or "").strip().lower()[:254]
    per_pair = db.session.execute(
        select(func.count(), func.min(LoginFailure.attempted_at))
        .where(LoginFailure.ip == ip, LoginFailure.email == email, LoginFailure.attempted_at >= since)
    ).one()
    per_ip = db.session.execute(
        select(func.count(), func.min(LoginFailure.attempted_at))
        .where(LoginFailure.ip == ip, LoginFailure.attempted_at >= since)
    ).one()
    for (count, oldest), limit in ((per_pair, MAX_PER_IP_AND_EMAIL), (per_ip, MAX_PER_IP)):
        if count >= limit:
            return max(1, int((oldest + WINDOW - now).total_seconds()) + 1)
    return None


def record_failure(ip: str, email: str) -> None:
    email = (email or "").strip().lower()[:254]
    db.session.add(LoginFailure(ip=ip[:64], email=email))
    # Old rows are of no use to anyone; keep the table small.
    db.session.execute(delete(LoginFailure).where(LoginFailure.attempted_at < utcnow() - 2 * WINDOW))
    db.session.commit()
    logger.warning("failed sign-in for %s from %s", email, ip)


def clear(ip: str, email: str) -> None:
    email = (email or "").strip().lower()[:254]
    db.session.execute(delete(LoginFailure).where(LoginFailure.ip == ip, LoginFailure.email == email))
    db.session.commit()
