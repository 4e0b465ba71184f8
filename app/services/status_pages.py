"""Public status pages: which endpoint groups are published, and what a
page shows (current status and 90 days of daily uptime).

Which groups are published is a setting (``settings`` key
``status_pages``), so it is configuration like any other: changed on the
primary (or a standalone), bumping ``config_version``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select

from app.extensions import db
from app.models import Endpoint, Setting, utcnow
from app.services.rollups import Tally, hourly_tallies

logger = logging.getLogger(__name__)

SETTING_KEY = "status_pages"
DAYS = 90


def slug_of(group: str) -> str:
    """The URL name of a group: lower case, dashes for anything else."""
    return re.sub(r"[^a-z0-9]+", "-", group.lower()).strip("-") or "group"


def published_groups() -> list[str]:
    setting = db.session.get(Setting, SETTING_KEY)
    return sorted((setting.value or {}).get("groups", [])) if setting else []


def groups() -> list[tuple[str, int]]:
    """Every endpoint group with its number of endpoints."""
    rows = db.session.execute(
        select(Endpoint.group_name, func.count()).where(Endpoint.group_name.is_not(None))
        .group_by(Endpoint.group_name).order_by(Endpoint.group_name)
    )
    return [(name, count) for name, count in rows if name]


def set_published(group: str, published: bool) -> None:
    """Publish or withdraw the status page of ``group`` (one transaction)."""
    if group not in {name for name, _ in groups()}:
        raise ValueError(f"there is no endpoint group named {group!r}")
    current = set(published_groups())
    current = current | {group} if published else current - {group}
    setting = db.session.get(Setting, SETTING_KEY)
    if setting is None:
        setting = Setting(key=SETTING_KEY, value={})
        db.session.add(setting)
    setting.value = {"groups": sorted(current)}
    db.session.commit()
    logger.info("status page of group %r %s", group, "published" if published else "withdrawn")


def replace_published(wanted: list[str]) -> None:
    """Publish exactly these groups' pages (the caller commits); a group
    with no endpoints is a ``ValueError`` naming it."""
    known = {name for name, _ in groups()}
    unknown = [group for group in wanted if group not in known]
    if unknown:
        raise ValueError("there is no endpoint group named " + ", ".join(repr(g) for g in unknown))
    setting = db.session.get(Setting, SETTING_KEY)
    if setting is None:
        setting = Setting(key=SETTING_KEY, value={})
        db.session.add(setting)
    setting.value = {"groups": sorted(set(wanted))}


def published_group_for(slug: str) -> str | None:
    for group in published_groups():
        if slug_of(group) == slug:
            return group
    return None


@dataclass
class DayBar:
    day: date
    uptime: float | None
    checks: int

    @property
    def level(self) -> str:
        if self.uptime is None:
            return "none"
        if self.uptime >= 99.9:
            return "good"
        if self.uptime >= 98:
            return "fair"
        return "bad"


@dataclass
class PublicEndpoint:
    name: str
    status: str
    bars: list[DayBar] = field(default_factory=list)
    uptime: float | None = None


def overall_status(endpoints: list[PublicEndpoint]) -> str:
    """A page's headline: DOWN if any endpoint's consensus is DOWN, PARTIAL
    (degraded) if any is PARTIAL, UP when all are up (or paused)."""
    statuses = {e.status for e in endpoints}
    if "DOWN" in statuses:
        return "DOWN"
    if "PARTIAL" in statuses:
        return "PARTIAL"
    if endpoints and statuses <= {"UP", "PAUSED"}:
        return "UP"
    return "PENDING"


def page(group: str, now: datetime | None = None) -> list[PublicEndpoint]:
    """The endpoints of a group with their status and daily uptime bars."""
    now = now or utcnow()
    endpoints = list(db.session.execute(
        select(Endpoint).where(Endpoint.group_name == group).order_by(Endpoint.name, Endpoint.id)
    ).scalars())
    first_day = (now - timedelta(days=DAYS - 1)).date()
    start = datetime.combine(first_day, datetime.min.time(), tzinfo=now.tzinfo)
    tallies = hourly_tallies(start, now, endpoint_ids=[e.id for e in endpoints])
    out = []
    for endpoint in endpoints:
        per_day: dict[date, Tally] = {}
        for hour, tally in tallies.get(endpoint.id, {}).items():
            per_day.setdefault(hour.date(), Tally()).add(tally)
        total = Tally()
        bars = []
        for offset in range(DAYS):
            day = first_day + timedelta(days=offset)
            tally = per_day.get(day, Tally())
            total.add(tally)
            bars.append(DayBar(day, tally.uptime, tally.checks))
        status = "PAUSED" if endpoint.is_paused else endpoint.status
        out.append(PublicEndpoint(endpoint.name, status, bars, total.uptime))
    return out
