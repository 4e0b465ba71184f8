"""One endpoint's history for its detail page: response time per location
over a range, the consensus over that range as a timeline, uptime per
location and of the consensus over 24 h / 7 d / 30 d, incidents, recent
failures and each location's view (from ``consensus``).

Short ranges read raw results downsampled to buckets in SQL; long ranges
and uptimes read the hourly counts per location (``result_location_hours``,
kept as results are stored, see ``rollups``) summed per bucket in SQL, so a
month from 3 locations is 360 rows, not 130,000 results, and nothing waits
for a job. The timeline reads status changes (at most
``MAX_TIMELINE_CHANGES``).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from flask import current_app
from sqlalchemy import select

from app.extensions import db
from app.models import Endpoint, LocationStatus, MonitoringInstance, ResponseTime, StatusChange, utcnow
from app.services import configuration
from app.services.rollups import (
    HOUR,
    Tally,
    hour_floor,
    hourly_tallies,
    location_checks_since,
    location_rows,
    raw_location_tallies,
    raw_tallies,
)


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
UPTIME_SPANS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
# A flapping endpoint's month can hold thousands of changes; the timeline
# shows the newest this many and marks the time before them as not shown.
MAX_TIMELINE_CHANGES = 2000


def range_for(requested: str | None, endpoint: Endpoint, now: datetime | None = None) -> str:
    """The range asked for if it is one, else one that fits the endpoint's
    age: the shortest that covers all of its history, ``DEFAULT_RANGE`` at
    most (a new endpoint opens on an hour, not on a day with one point)."""
    if requested in RANGES:
        return requested
    age = (now or utcnow()) - endpoint.created_at
    for selected in RANGES.values():  # shortest first
        if selected.span >= age or selected.key == DEFAULT_RANGE:
            return selected.key
    return DEFAULT_RANGE


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
class Location:
    """A location (instance) that checked the endpoint, as the page names and colours it."""

    instance_id: str
    name: str
    colour: int  # index into the chart's palette, the same in every range


def _locations(endpoint_id: int, seen: dict[str, str]) -> list[Location]:
    """The endpoint's locations in a fixed order, so each keeps its colour
    whatever the range: those that check it now (this instance first, then
    by name), then any others its results came from (``seen``: instance id
    to the location it reported), such as a removed instance."""
    current = dict(db.session.execute(
        select(LocationStatus.instance_id, LocationStatus.location).where(LocationStatus.endpoint_id == endpoint_id)
    ).all())
    labels = {**seen, **current}
    own = configuration.instance_id()
    ordered = sorted(labels, key=lambda i: (i not in current, i != own, labels[i], i))
    shared = {label for label, count in Counter(labels.values()).items() if count > 1}
    names = {}
    if shared:
        # Two instances in one location: tell them apart by the instance's name.
        names = dict(db.session.execute(select(MonitoringInstance.id, MonitoringInstance.name).where(
            MonitoringInstance.id.in_([i for i in ordered if labels[i] in shared]))).all())
        names.setdefault(own, current_app.config["SETTINGS"].instance_name)
    return [Location(i, f"{labels[i]} ({names.get(i, i[:8])})" if labels[i] in shared else labels[i], colour)
            for colour, i in enumerate(ordered)]


@dataclass
class LocationSeries:
    """One location's buckets over a range, and its total over the range."""

    location: Location
    buckets: list[Bucket]
    total: Tally


@dataclass(frozen=True)
class Span:
    """A stretch of time with one consensus; ``status`` None: not shown
    (older than the newest ``MAX_TIMELINE_CHANGES`` changes)."""

    start: datetime
    end: datetime
    status: str | None


@dataclass
class RangeChart:
    """What the chart panel draws for one range: a series per location and
    the consensus timeline, over [start, end)."""

    range: Range
    start: datetime
    end: datetime
    series: list[LocationSeries]
    timeline: list[Span]


def range_chart(endpoint: Endpoint, range_key: str, now: datetime | None = None) -> RangeChart:
    """Response times per location in buckets over the range, and the
    consensus timeline over it (a fixed number of bounded queries)."""
    now = now or utcnow()
    selected = RANGES[range_key]
    size = int(selected.bucket.total_seconds())
    first = int((now - selected.span).timestamp()) // size
    last = int(now.timestamp()) // size
    start = datetime.fromtimestamp(first * size, timezone.utc)
    end = datetime.fromtimestamp((last + 1) * size, timezone.utc)
    if selected.bucket < HOUR:
        found = raw_location_tallies(start, end, bucket_seconds=size, endpoint_ids=[endpoint.id]).items()
    else:  # buckets of whole hours, which start on an hour
        found = location_rows(start, now, endpoint_ids=[endpoint.id], bucket_seconds=size)
    by_location: dict[str, dict[int, Tally]] = {}
    seen: dict[str, str] = {}
    for key, tally in found:
        by_location.setdefault(key.instance_id, {}).setdefault(key.bucket, Tally()).add(tally)
        seen[key.instance_id] = key.location
    series = []
    for location in _locations(endpoint.id, seen):
        tallies = by_location.get(location.instance_id, {})
        total = Tally()
        for tally in tallies.values():
            total.add(tally)
        series.append(LocationSeries(location, [
            Bucket(datetime.fromtimestamp(n * size, timezone.utc), tallies.get(n, Tally()))
            for n in range(first, last + 1)], total))
    return RangeChart(selected, start, end, series, consensus_timeline(endpoint, start, now))


def consensus_timeline(endpoint: Endpoint, start: datetime, end: datetime) -> list[Span]:
    """The consensus from ``start`` (or the endpoint's creation) to ``end``,
    as spans, from its status changes: the newest before ``start`` and at
    most ``MAX_TIMELINE_CHANGES`` within."""
    if start >= end:
        return []
    table = StatusChange.__table__.c
    within = list(db.session.execute(
        select(table.changed_at, table.from_status, table.to_status)
        .where(table.endpoint_id == endpoint.id, table.changed_at >= start, table.changed_at < end)
        .order_by(table.changed_at.desc(), table.id.desc()).limit(MAX_TIMELINE_CHANGES + 1)
    ).all())[::-1]
    if len(within) > MAX_TIMELINE_CHANGES:
        shown_from = within[1].changed_at
        status = None
        within = within[1:]
        spans = [Span(start, shown_from, None)]
        start = shown_from
    else:
        before = db.session.execute(
            select(table.to_status).where(table.endpoint_id == endpoint.id, table.changed_at < start)
            .order_by(table.changed_at.desc(), table.id.desc()).limit(1)
        ).scalar_one_or_none()
        status = before or (within[0].from_status if within else endpoint.status)
        spans = []
        if before is None:
            # Nothing before the endpoint existed (its first change may be
            # stamped a moment earlier: the check that made it).
            start = max(start, min([endpoint.created_at] + [change.changed_at for change in within[:1]]))
    moment = start
    for changed_at, _, to_status in within:
        if changed_at > moment and status is not None:
            spans.append(Span(moment, changed_at, status))
        moment, status = max(moment, changed_at), to_status
    if end > moment:
        spans.append(Span(moment, end, status))
    return spans


@dataclass
class LocationUptime:
    """A location's share of checks passed over each of ``UPTIME_SPANS``."""

    location: Location
    uptimes: dict[str, float | None]  # by UPTIME_SPANS key


def location_uptimes(endpoint: Endpoint, now: datetime | None = None) -> list[LocationUptime]:
    """Each location's share of checks passed over 24 h, 7 d and 30 d
    (hour granularity), from the hourly counts per location: one query."""
    now = now or utcnow()
    # An hour counts towards a span when any of it is inside the span.
    found = location_checks_since(endpoint.id, {name: hour_floor(now - span) for name, span in UPTIME_SPANS.items()},
                                  now)
    return [LocationUptime(location, {name: tally.uptime for name, tally in found[location.instance_id][1].items()}
                           if location.instance_id in found else dict.fromkeys(UPTIME_SPANS))
            for location in _locations(endpoint.id, {i: label for i, (label, _) in found.items()})]


def consensus_uptimes(endpoint: Endpoint, now: datetime | None = None) -> dict[str, float | None]:
    """The consensus uptime over 24 h, 7 d and 30 d (time-weighted, see
    ``consensus.uptimes``)."""
    from app.services import consensus

    found = consensus.uptimes([endpoint.id], now, spans=UPTIME_SPANS.values()).get(endpoint.id, {})
    return {name: found.get(span) for name, span in UPTIME_SPANS.items()}


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
    """The newest failed results, from every location, newest first."""
    # Written as the partial index ix_response_times_failed is, so it is used.
    return list(db.session.execute(
        select(ResponseTime).where(ResponseTime.endpoint_id == endpoint_id, ~ResponseTime.is_ok)
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
