"""The location map: where each instance stands, how it is doing, and what
its checks measured over the last hour and the last day.

An instance stands at the coordinates its settings give
(``INSTANCE_LATITUDE`` / ``INSTANCE_LONGITUDE``; a member sends them in its
heartbeat's ``systemInfo``), or else at the place its location names
(``app.services.regions``); otherwise it is listed as not placed. Its
health means what it means on the instances page: the instance's status
(active, inactive after missed heartbeats, failed after a long silence) and
whether its location is probe-offline (left out of every vote). A primary
shows every member of the cluster; a standalone or a dependent, itself.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from flask import current_app
from sqlalchemy import case, false, func, literal_column, select

from app.extensions import db
from app.models import ResponseTime, utcnow
from app.services import configuration, consensus
from app.services.regions import Place, place_of
from app.services.rollups import bucket_sql
from app.services.sync import primary
from app.services.world_map import project

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
BUCKET_SECONDS = 300
SETTLED_AFTER = timedelta(minutes=2)
RECOUNT_AFTER = timedelta(minutes=15)
MAX_RECOUNTED = 12
# Markers at one point are spread around it this far apart (map units).
SPREAD = 11.0

# Worst first: a region shows the worst health among its instances.
HEALTH_FAILED = "failed"
HEALTH_INACTIVE = "inactive"
HEALTH_PROBE_OFFLINE = "probe-offline"
HEALTH_ACTIVE = "active"
HEALTHS = (HEALTH_FAILED, HEALTH_INACTIVE, HEALTH_PROBE_OFFLINE, HEALTH_ACTIVE)
HEALTH_LABELS = {HEALTH_FAILED: "Failed", HEALTH_INACTIVE: "Inactive", HEALTH_PROBE_OFFLINE: "Probe offline",
                 HEALTH_ACTIVE: "Active"}
# The instance statuses of ``app.services.sync.primary``.
_STATUS_HEALTH = {"active": HEALTH_ACTIVE, "inactive": HEALTH_INACTIVE, "failed": HEALTH_FAILED}


@dataclass
class Figures:
    """Checks, failures and response times over one span."""

    checks: int = 0
    failures: int = 0
    response_ms_sum: float = 0.0
    response_ms_count: int = 0

    @property
    def average_ms(self) -> float | None:
        return self.response_ms_sum / self.response_ms_count if self.response_ms_count else None

    @property
    def failure_percent(self) -> float | None:
        return 100.0 * self.failures / self.checks if self.checks else None

    def add(self, other: Figures) -> None:
        self.checks += other.checks
        self.failures += other.failures
        self.response_ms_sum += other.response_ms_sum
        self.response_ms_count += other.response_ms_count


@dataclass
class Marker:
    """One instance on the map (``x``, ``y`` in map units) or not placed."""

    instance_id: str
    name: str
    location: str
    role: str
    is_self: bool
    health: str
    health_reason: str | None
    latitude: float | None = None
    longitude: float | None = None
    # "settings" (its own coordinates) or the known place its location names.
    placed_by: str | None = None
    place: Place | None = None
    x: float = 0.0
    y: float = 0.0
    hour: Figures = field(default_factory=Figures)
    day: Figures = field(default_factory=Figures)

    @property
    def is_placed(self) -> bool:
        return self.latitude is not None

    @property
    def health_label(self) -> str:
        label = HEALTH_LABELS.get(self.health, self.health)
        return f"{label}: {self.health_reason}" if self.health_reason else label


@dataclass
class Region:
    """The instances of one location, their figures summed."""

    location: str
    place: Place | None
    markers: list[Marker] = field(default_factory=list)
    hour: Figures = field(default_factory=Figures)
    day: Figures = field(default_factory=Figures)

    @property
    def health(self) -> str:
        return min((m.health for m in self.markers), key=HEALTHS.index)


@dataclass
class LocationMap:
    """What the map page shows."""

    placed: list[Marker]
    unplaced: list[Marker]
    regions: list[Region]
    generated_at: datetime


def _bucket(moment: datetime) -> int:
    """The number of the five-minute bucket ``moment`` falls in."""
    return int(moment.timestamp()) // BUCKET_SECONDS


def _bucket_start(bucket: int) -> datetime:
    return datetime.fromtimestamp(bucket * BUCKET_SECONDS, timezone.utc)


def _count(instance_ids: tuple[str, ...], start: datetime, end: datetime, *, through_end: bool = False,
           by_bucket: bool = False) -> dict[tuple[str, int], Figures]:
    """One query: each instance's figures over [start, end) (or [start,
    end]), per five-minute bucket when asked. A bounded range of
    ``checked_at`` for each instance, which the (instance_id, checked_at)
    index serves."""
    c = ResponseTime.__table__.c
    failed = c.is_ok == false()
    keys = [c.instance_id]
    if by_bucket:
        keys.append(literal_column(bucket_sql("response_times.checked_at", BUCKET_SECONDS)).label("bucket"))
    rows = db.session.execute(
        select(*keys, func.count(), func.sum(case((failed, 1), else_=0)), func.sum(c.response_time_ms),
               func.count(c.response_time_ms))
        .where(c.instance_id.in_(instance_ids), c.checked_at >= start,
               c.checked_at <= end if through_end else c.checked_at < end)
        .group_by(*keys)
    ).all()
    counted = {}
    for row in rows:
        instance_id, bucket = row[0], int(row[1]) if by_bucket else 0
        checks, failures, ms_sum, ms_count = row[-4:]
        counted[(instance_id, bucket)] = Figures(int(checks), int(failures or 0), float(ms_sum or 0), int(ms_count))
    return counted


class SettledBuckets:
    """Each instance's figures per settled five-minute bucket of the last
    day, counted once and kept in this process.

    A day of results is millions of rows at a few thousand endpoints:
    counting them at every refresh would take seconds. So a poll counts
    only the edges that are not whole settled buckets (at most three
    five-minute spans) and adds these. A bucket is settled
    ``SETTLED_AFTER`` its end, when results sent with a heartbeat or two
    have arrived; results that arrive later still (a dependent's outbox
    after an outage) count once the bucket is counted again,
    ``RECOUNT_AFTER`` later, at most ``MAX_RECOUNTED`` buckets per poll.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._key: tuple | None = None
        # bucket number -> (when counted, figures by instance id)
        self._buckets: dict[int, tuple[datetime, dict[str, Figures]]] = {}

    def figures(self, instance_ids: tuple[str, ...], first: int, end: int, now: datetime) -> list[dict[str, Figures]]:
        """The figures of buckets ``first`` to ``end - 1``, counting those
        not counted yet and the oldest counts that are due again."""
        key = (str(db.engine.url), instance_ids)
        with self._lock:
            if key != self._key:  # another database, or the members changed
                self._key, self._buckets = key, {}
            for bucket in [b for b in self._buckets if b < first]:
                del self._buckets[bucket]
            missing = [b for b in range(first, end) if b not in self._buckets]
            for run_start, run_end in _runs(missing):
                self._count(instance_ids, run_start, run_end, now)
            due = sorted((counted_at, b) for b, (counted_at, _) in self._buckets.items()
                         if first <= b < end and now - counted_at > RECOUNT_AFTER)
            if due:
                oldest = due[0][1]
                run_end = oldest
                while (run_end < end and run_end - oldest < MAX_RECOUNTED
                       and now - self._buckets[run_end][0] > RECOUNT_AFTER):
                    run_end += 1
                self._count(instance_ids, oldest, run_end, now)
            return [self._buckets[b][1] for b in range(first, end)]

    def _count(self, instance_ids: tuple[str, ...], first: int, end: int, now: datetime) -> None:
        counted = _count(instance_ids, _bucket_start(first), _bucket_start(end), by_bucket=True)
        for bucket in range(first, end):
            self._buckets[bucket] = (now, {})
        for (instance_id, bucket), figures in counted.items():
            if first <= bucket < end:
                self._buckets[bucket][1][instance_id] = figures


def _runs(buckets: list[int]) -> list[tuple[int, int]]:
    """Sorted bucket numbers as [start, end) runs of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for bucket in buckets:
        if runs and runs[-1][1] == bucket:
            runs[-1] = (runs[-1][0], bucket + 1)
        else:
            runs.append((bucket, bucket + 1))
    return runs


_settled = SettledBuckets()


def figures_by_instance(instance_ids: Iterable[str], now: datetime) -> dict[str, tuple[Figures, Figures]]:
    """Each instance's figures over the last hour and the last day: the
    settled five-minute buckets (``SettledBuckets``) plus, counted now,
    the spans before the first whole bucket of each and after the last
    settled one."""
    ids = tuple(sorted(set(instance_ids)))
    if not ids:
        return {}
    settled_end = _bucket(now - SETTLED_AFTER)
    day_first, hour_first = _bucket(now - DAY) + 1, _bucket(now - HOUR) + 1
    buckets = _settled.figures(ids, day_first, settled_end, now)
    recent = _count(ids, _bucket_start(settled_end), now, through_end=True)
    day_edge = _count(ids, now - DAY, _bucket_start(day_first))
    hour_edge = _count(ids, now - HOUR, _bucket_start(hour_first))
    figures = {}
    for instance_id in ids:
        hour, day = Figures(), Figures()
        for index, bucket in enumerate(buckets):
            if instance_id in bucket:
                day.add(bucket[instance_id])
                if day_first + index >= hour_first:
                    hour.add(bucket[instance_id])
        for span, totals in ((recent, (hour, day)), (day_edge, (day,)), (hour_edge, (hour,))):
            if (instance_id, 0) in span:
                for total in totals:
                    total.add(span[(instance_id, 0)])
        if day.checks:
            figures[instance_id] = (hour, day)
    return figures


def _coordinates(system_info: dict | None) -> tuple[float, float] | None:
    """Coordinates a member sent (validated on arrival; checked again here,
    since the record outlives the version that wrote it)."""
    info = system_info or {}
    latitude, longitude = info.get("latitude"), info.get("longitude")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in (latitude, longitude)):
        return None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    return float(latitude), float(longitude)


def _members() -> list[Marker]:
    """Every instance this one can show, unplaced, with its health."""
    state = configuration.snapshot()
    settings = current_app.config["SETTINGS"]
    if state.is_primary:
        markers = []
        for row in primary.registry():
            instance = row["instance"]
            health = _STATUS_HEALTH.get(instance.status, HEALTH_INACTIVE)
            reason = None
            if health == HEALTH_ACTIVE and row["probe_offline"]:
                health, reason = HEALTH_PROBE_OFFLINE, row["probe_offline"]
            coordinates = settings.instance_coordinates if row["is_self"] else _coordinates(instance.system_info)
            markers.append(_placed(Marker(instance.id, instance.name, instance.location, instance.role,
                                          row["is_self"], health, reason), coordinates))
        return markers
    probe = consensus.probe_states().get(state.instance_id)
    offline = bool(probe and probe.offline_since)
    own = Marker(state.instance_id, settings.instance_name, settings.instance_location, state.role, True,
                 HEALTH_PROBE_OFFLINE if offline else HEALTH_ACTIVE,
                 (probe.offline_reason or "probe offline") if offline else None)
    return [_placed(own, settings.instance_coordinates)]


def _placed(marker: Marker, coordinates: tuple[float, float] | None) -> Marker:
    marker.place = place_of(marker.location)
    if coordinates is not None:
        marker.latitude, marker.longitude = coordinates
        marker.placed_by = "settings"
    elif marker.place is not None:
        marker.latitude, marker.longitude = marker.place.latitude, marker.place.longitude
        marker.placed_by = "location"
    if marker.is_placed:
        marker.x, marker.y = project(marker.latitude, marker.longitude)
    return marker


def _spread(markers: list[Marker]) -> None:
    """Markers that would hide one another (one region, several instances)
    are set around their common point."""
    by_point: dict[tuple[int, int], list[Marker]] = {}
    for marker in markers:
        by_point.setdefault((round(marker.x / SPREAD), round(marker.y / SPREAD)), []).append(marker)
    for group in by_point.values():
        if len(group) < 2:
            continue
        cx = sum(m.x for m in group) / len(group)
        cy = sum(m.y for m in group) / len(group)
        radius = SPREAD * len(group) / (2 * math.pi) + SPREAD / 2
        for i, marker in enumerate(group):
            angle = 2 * math.pi * i / len(group) - math.pi / 2
            marker.x, marker.y = round(cx + radius * math.cos(angle), 1), round(cy + radius * math.sin(angle), 1)


def location_map(now: datetime | None = None) -> LocationMap:
    """The markers, the instances not placed, and the figures by region."""
    now = now or utcnow()
    markers = _members()
    figures = figures_by_instance((m.instance_id for m in markers), now)
    regions: dict[str, Region] = {}
    for marker in markers:
        marker.hour, marker.day = figures.get(marker.instance_id, (Figures(), Figures()))
        region = regions.setdefault(marker.location, Region(marker.location, marker.place))
        region.markers.append(marker)
        region.hour.add(marker.hour)
        region.day.add(marker.day)
    placed = sorted((m for m in markers if m.is_placed), key=lambda m: (m.location, m.name))
    _spread(placed)
    return LocationMap(
        placed=placed,
        unplaced=sorted((m for m in markers if not m.is_placed), key=lambda m: (m.location, m.name)),
        regions=sorted(regions.values(), key=lambda r: (HEALTHS.index(r.health), r.location)),
        generated_at=now,
    )
