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

Its figures (checks, failures, average response time) are counted as the
rest of the app counts, two queries for every instance at once, whatever
the number of endpoints:

- the last hour is exact: raw results checked in [now - 1 h, now];
- the last day has hour granularity, as the endpoint page's uptimes: the
  hour it starts in counts whole, so it is [the hour of now - 1 day, now],
  between 24 and 25 hours, read from ``result_location_hours`` (counted as
  results are stored: 25 rows per endpoint and instance, not 1,440
  results), so a result that arrives late counts in both at once.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import case, false, func, select

from app.extensions import db
from app.models import ResponseTime, ResultLocationHour, utcnow
from app.services import configuration, consensus
from app.services.regions import Place, place_of
from app.services.rollups import hour_floor
from app.services.sync import primary
from app.services.world_map import project

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
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


def _counted(instance_ids: tuple[str, ...], start: datetime, now: datetime) -> dict[str, Figures]:
    """Each instance's counted hours from ``start`` through the current
    hour, summed in SQL: one query, a range of ``result_location_hours``'
    hour index."""
    h = ResultLocationHour.__table__.c
    rows = db.session.execute(
        select(h.instance_id, func.sum(h.checks), func.sum(h.checks - h.ok_checks), func.sum(h.response_ms_sum),
               func.sum(h.response_ms_count))
        .where(h.instance_id.in_(instance_ids), h.hour >= start, h.hour < hour_floor(now) + HOUR)
        .group_by(h.instance_id)
    ).all()
    return {instance_id: Figures(int(checks or 0), int(failures or 0), float(ms_sum or 0), int(ms_count or 0))
            for instance_id, checks, failures, ms_sum, ms_count in rows}


def _last_hour(instance_ids: tuple[str, ...], now: datetime) -> dict[str, Figures]:
    """Each instance's raw results checked in [now - 1 h, now]: one query, a
    bounded range of the (instance_id, checked_at) index."""
    c = ResponseTime.__table__.c
    rows = db.session.execute(
        select(c.instance_id, func.count(), func.sum(case((c.is_ok == false(), 1), else_=0)),
               func.sum(c.response_time_ms), func.count(c.response_time_ms))
        .where(c.instance_id.in_(instance_ids), c.checked_at >= now - HOUR, c.checked_at <= now)
        .group_by(c.instance_id)
    ).all()
    return {instance_id: Figures(int(checks), int(failures or 0), float(ms_sum or 0), int(ms_count))
            for instance_id, checks, failures, ms_sum, ms_count in rows}


def figures_by_instance(instance_ids: Iterable[str], now: datetime) -> dict[str, tuple[Figures, Figures]]:
    """Each instance's figures over the last hour and the last day (see
    the module's docstring for their edges); instances without a check in
    the day are left out. Two queries for any number of instances and
    endpoints."""
    ids = tuple(sorted(set(instance_ids)))
    if not ids:
        return {}
    day = _counted(ids, hour_floor(now - DAY), now)
    hour = _last_hour(ids, now)
    return {instance_id: (hour.get(instance_id, Figures()), day[instance_id])
            for instance_id in ids if instance_id in day and day[instance_id].checks}


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
