"""Public status pages: which endpoint groups are published, and what a
page shows (its title, current status and 90 days of daily uptime, each
day coloured by its uptime).

Which groups are published, and any title given to a page, is a setting
(``settings`` key ``status_pages``: ``{"groups": [...], "titles": {group:
title}}``), so it is configuration like any other: changed on the primary
(or a standalone), bumping ``config_version``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select

from app.extensions import db
from app.models import Endpoint, Setting, utcnow
from app.services import maintenance
from app.services.maintenance import Notice
from app.services.rollups import Tally, daily_tallies

logger = logging.getLogger(__name__)

SETTING_KEY = "status_pages"
DAYS = 90
MAX_TITLE_LENGTH = 100
# How often an open page fetches its content again (it is cached for as long).
REFRESH_SECONDS = 30
# Words written in capitals when a group's name is made a title.
ACRONYMS = frozenset({"api", "apis", "aws", "cdn", "ci", "cpu", "crm", "db", "dns", "eu", "gcp", "http", "https",
                      "id", "io", "ip", "it", "mq", "qa", "sftp", "smtp", "sql", "ssh", "sso", "tcp", "tls",
                      "ui", "uk", "url", "us", "vpn", "www"})
# A day's colour by its uptime, best first: (level, lowest uptime %). A
# short outage on a day of many checks costs a fraction of a percent, so
# it shows as a lighter green, not as a red day.
DAY_LEVELS = (("good", 99.9), ("fair", 99.0), ("poor", 95.0), ("bad", 0.0))


def slug_of(group: str) -> str:
    """The URL name of a group: lower case, dashes for anything else."""
    return re.sub(r"[^a-z0-9]+", "-", group.lower()).strip("-") or "group"


def _setting_value() -> dict:
    setting = db.session.get(Setting, SETTING_KEY)
    return dict(setting.value or {}) if setting else {}


def _save_setting(value: dict) -> None:
    setting = db.session.get(Setting, SETTING_KEY)
    if setting is None:
        setting = Setting(key=SETTING_KEY, value={})
        db.session.add(setting)
    setting.value = value


def published_groups() -> list[str]:
    """The groups whose status pages are public, by name."""
    return sorted(_setting_value().get("groups", []))


def configured_titles() -> dict[str, str]:
    """The titles given to status pages, by group (groups without one are left out)."""
    return dict(_setting_value().get("titles", {}))


def humanised(group: str) -> str:
    """A group's name as words: "payments-api" -> "Payments API". A name
    with capitals is taken as written, its separators made spaces."""
    words = [word for word in re.split(r"[-_.\s]+", group.strip()) if word]
    if not words:
        return group.strip() or "Services"
    if any(ch.isupper() for ch in group):
        return " ".join(words)
    return " ".join(word.upper() if word in ACRONYMS else word[:1].upper() + word[1:] for word in words)


def title_for(group: str) -> str:
    """The heading of a group's status page: its configured title, or its
    name as words followed by "status"."""
    return configured_titles().get(group) or f"{humanised(group)} status"


def set_title(group: str, title: str) -> str:
    """Give a group's status page a title ("" goes back to the default);
    returns the title the page now shows. Raises ValueError naming the field."""
    if group not in {name for name, _ in groups()}:
        raise ValueError(f"there is no endpoint group named {group!r}")
    title = " ".join((title or "").split())
    if len(title) > MAX_TITLE_LENGTH:
        raise ValueError(f"title must be at most {MAX_TITLE_LENGTH} characters (it has {len(title)})")
    value = _setting_value()
    titles = dict(value.get("titles", {}))
    if title:
        titles[group] = title
    else:
        titles.pop(group, None)
    value["titles"] = titles
    _save_setting(value)
    db.session.commit()
    logger.info("status page of group %r titled %r", group, title or None)
    return title_for(group)


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
    value = _setting_value()
    current = set(value.get("groups", []))
    current = current | {group} if published else current - {group}
    value["groups"] = sorted(current)
    _save_setting(value)
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
    """One day of an endpoint: its uptime (None without checks), coloured by it."""

    day: date
    uptime: float | None
    checks: int
    ok_checks: int = 0

    @property
    def level(self) -> str:
        """good, fair, poor or bad by the day's uptime (DAY_LEVELS); none without checks."""
        if self.uptime is None:
            return "none"
        return next(level for level, lowest in DAY_LEVELS if self.uptime >= lowest)

    @property
    def percent(self) -> str:
        """The uptime as shown: two decimals, never rounded up to 100 when a check failed."""
        if self.uptime is None:
            return ""
        if self.ok_checks < self.checks and self.uptime >= 99.995:
            return "99.99 %"
        return f"{self.uptime:.2f} %"

    @property
    def label(self) -> str:
        """What hovering over the day says."""
        when = self.day.strftime("%a %d %b %Y")
        if self.uptime is None:
            return f"{when}: no data"
        failed = self.checks - self.ok_checks
        detail = f"{failed:,} of {self.checks:,} checks failed" if failed else f"all {self.checks:,} checks passed"
        return f"{when}: {self.percent} up ({detail})"


@dataclass
class PublicEndpoint:
    name: str
    status: str
    bars: list[DayBar] = field(default_factory=list)
    uptime: float | None = None
    in_maintenance: bool = False


def overall_status(endpoints: list[PublicEndpoint]) -> str:
    """A page's headline: DOWN if any endpoint's consensus is DOWN, PARTIAL
    (degraded) if any is PARTIAL, MAINTENANCE if the only ones down or
    degraded are in a maintenance window, UP when all are up (or paused)."""
    # Down or degraded in a maintenance window is maintenance, not an outage.
    statuses = {"MAINTENANCE" if e.in_maintenance and e.status in ("DOWN", "PARTIAL") else e.status
                for e in endpoints}
    if "DOWN" in statuses:
        return "DOWN"
    if "PARTIAL" in statuses:
        return "PARTIAL"
    if "MAINTENANCE" in statuses:
        return "MAINTENANCE"
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
    # A row per endpoint, location and day: counted as results are stored.
    tallies = daily_tallies(start, now, endpoint_ids=[e.id for e in endpoints])
    held = maintenance.endpoints_in_maintenance({e.id: e.group_name for e in endpoints}, now)
    out = []
    for endpoint in endpoints:
        per_day: dict[date, Tally] = tallies.get(endpoint.id, {})
        total = Tally()
        bars = []
        for offset in range(DAYS):
            day = first_day + timedelta(days=offset)
            tally = per_day.get(day, Tally())
            total.add(tally)
            bars.append(DayBar(day, tally.uptime, tally.checks, tally.ok_checks))
        status = "PAUSED" if endpoint.is_paused else endpoint.status
        out.append(PublicEndpoint(endpoint.name, status, bars, total.uptime, endpoint.id in held))
    return out


@dataclass
class StatusPage:
    """Everything a public status page shows."""

    group: str
    title: str
    endpoints: list[PublicEndpoint]
    overall: str
    updated_at: datetime
    days: int = DAYS
    refresh_seconds: int = REFRESH_SECONDS
    # Maintenance windows in progress or coming within a week.
    maintenance: list[Notice] = field(default_factory=list)


def status_page(group: str, now: datetime | None = None) -> StatusPage:
    """A published group's page: title, endpoints with their days, headline."""
    now = now or utcnow()
    endpoints = page(group, now)
    return StatusPage(group=group, title=title_for(group), endpoints=endpoints,
                      overall=overall_status(endpoints), updated_at=now,
                      maintenance=maintenance.notices(_members(group), now))


def _members(group: str) -> dict[int, str]:
    return {endpoint_id: group for endpoint_id in db.session.execute(
        select(Endpoint.id).where(Endpoint.group_name == group)).scalars()}
