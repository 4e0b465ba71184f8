"""One endpoint's history for its detail page: response-time chart over a
range, uptime over 24 h / 7 d / 30 d, incidents, recent failures and each
location's view (from ``consensus``).

Short ranges read raw results downsampled to buckets in SQL; long ranges
read hourly roll-ups (see ``rollups``), so a month is 720 rows, not 43,200.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from app.extensions import db
from app.models import Endpoint, ResponseTime, StatusChange, utcnow
from app.services import configuration
from app.services.rollups import HOUR, Tally, hour_floor, hourly_tallies, raw_tallies


@dataclass(frozen=True)
class Range:
    key: str
    label: str
    span: timedelta
    bucket: timedelta


RANGES = {
    r.key: r for r in (
        Range("1h", "1 hour", timedelta(hours=1), timedelta(minutes=1)),
        Range("24h", "24 hours", timedelta(hours=24), timedelta(minutes=15)),
        Range("7d", "7 days", timedelta(days=7), timedelta(hours=2)),
        Range("30d", "30 days", timedelta(days=30), timedelta(hours=6)),
    )
}
DEFAULT_RANGE = "24h"


@dataclass
class Bucket:
    start: datetime
    tally: Tally


def chart(endpoint_id: int, range_key: str, now: datetime | None = None) -> list[Bucket]:
    """Buckets covering the range, oldest first (empty buckets included)."""
    now = now or utcnow()
    selected = RANGES[range_key]
    size = int(selected.bucket.total_seconds())
    first = int((now - selected.span).timestamp()) // size
    last = int(now.timestamp()) // size
    by_bucket: dict[int, Tally] = {}
    if selected.bucket < HOUR:
        start = datetime.fromtimestamp(first * size, timezone.utc)
        end = datetime.fromtimestamp((last + 1) * size, timezone.utc)  # the current bucket, nothing later
        for (_, number), tally in raw_tallies(start, end, bucket_seconds=size, endpoint_ids=[endpoint_id]).items():
            by_bucket[number] = tally
    else:
        start = hour_floor(datetime.fromtimestamp(first * size, timezone.utc))
        for hour, tally in hourly_tallies(start, now, endpoint_ids=[endpoint_id]).get(endpoint_id, {}).items():
            by_bucket.setdefault(int(hour.timestamp()) // size, Tally()).add(tally)
    return [Bucket(datetime.fromtimestamp(n * size, timezone.utc), by_bucket.get(n, Tally()))
            for n in range(first, last + 1)]


def uptimes(endpoint_id: int, now: datetime | None = None) -> dict[str, float | None]:
    """Uptime percentage over 24 h, 7 d and 30 d (hour granularity)."""
    now = now or utcnow()
    per_hour = hourly_tallies(hour_floor(now - timedelta(days=30)), now,
                              endpoint_ids=[endpoint_id]).get(endpoint_id, {})
    out = {}
    for key, span in (("24h", timedelta(hours=24)), ("7d", timedelta(days=7)), ("30d", timedelta(days=30))):
        total = Tally()
        for hour, tally in per_hour.items():
            if hour + HOUR > now - span:
                total.add(tally)
        out[key] = total.uptime
    return out


@dataclass
class Incident:
    """A status change and how long the new status lasted."""

    change: StatusChange
    ended_at: datetime | None  # None: still in this status
    duration: timedelta


def incidents(endpoint: Endpoint, *, limit: int = 50, now: datetime | None = None) -> list[Incident]:
    """The latest status changes, newest first, with their durations."""
    now = now or utcnow()
    changes = list(db.session.execute(
        select(StatusChange).where(StatusChange.endpoint_id == endpoint.id)
        .order_by(StatusChange.changed_at.desc(), StatusChange.id.desc()).limit(limit)
    ).scalars())
    out = []
    later = None
    for change in changes:
        ended = later.changed_at if later is not None else None
        out.append(Incident(change, ended, (ended or now) - change.changed_at))
        later = change
    return out


def recent_failures(endpoint_id: int, *, limit: int = 20) -> list[ResponseTime]:
    return list(db.session.execute(
        select(ResponseTime).where(ResponseTime.endpoint_id == endpoint_id, ResponseTime.is_ok.is_(False))
        .order_by(ResponseTime.checked_at.desc()).limit(limit)
    ).scalars())


def latest_certificate(endpoint: Endpoint) -> dict | None:
    """certificateInfo of this instance's newest result that has one (HTTPS only).

    This instance's own: what a dependent reports of the certificate (it may
    be served another one, or send anything at all) is not shown as the
    endpoint's. A ``daysRemaining`` that is not a whole number is left out.
    """
    if endpoint.check_type != "http" or not endpoint.target.lower().startswith("https:"):
        return None
    rows = db.session.execute(
        select(ResponseTime.check_metadata)
        .where(ResponseTime.endpoint_id == endpoint.id, ResponseTime.instance_id == configuration.instance_id())
        .order_by(ResponseTime.checked_at.desc()).limit(20)
    ).scalars()
    for metadata in rows:
        info = (metadata or {}).get("certificateInfo")
        if info and isinstance(info, dict):
            days = info.get("daysRemaining")
            if "daysRemaining" in info and (not isinstance(days, int) or isinstance(days, bool)):
                info = {key: value for key, value in info.items() if key != "daysRemaining"}
            return info
    return None


def locations(endpoint: Endpoint) -> list:
    """Each location that checks ``endpoint``, with its status, newest
    result, freshness and probe state (``consensus.LocationRow``)."""
    from app.services import consensus

    return consensus.locations_of([endpoint]).get(endpoint.id, [])
