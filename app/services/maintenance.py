"""Maintenance windows: when chosen endpoints raise no alerts.

A window is one-off (a start and an end) or recurring (a five-field cron
expression read in an IANA time zone, each occurrence lasting
``duration_minutes``). It covers the endpoints it names and every endpoint
in the groups it names (``endpoint.group_name``), looked up when asked, so
an endpoint added to a group later is covered too.

What a window changes (docs/notifications.md, "Maintenance windows"):

1. Checks run and results are stored as always; a result is in maintenance
   when a window covering its endpoint covers its ``checked_at``
   (computed from the windows, nothing is stored on the result).
2. A consensus change inside a window is recorded as usual, but its alert
   is held back: ``consensus`` stores it with ``alert_event`` None and
   ``suppressed_alert``/``suppressed_by`` saying what and why, and leaves
   the endpoint's ``alerted_status`` as it was.
3. When the window ends, ``release_held_alerts`` (the alert sweep, every
   ~15 s) compares each such endpoint's status with the status last
   alerted: still DOWN after the window means one DOWN alert now; DOWN
   before the window and UP after it, one recovery alert; back to what was
   last alerted, nothing.
4. Reminders and certificate alerts wait while an endpoint is in a window.

Time zones and daylight saving time: occurrences are cron's wall-clock times
in the window's zone. A start that falls in the hour skipped when clocks go
forward begins at the moment they jump (02:30 on the night of the change
begins at 03:00 summer time), as cron runs such jobs; a start in the hour
repeated when clocks go back begins once, at its first pass. A duration is
elapsed time: a 120-minute window is 120 minutes whatever the clocks do.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from sqlalchemy import select, update

from app.extensions import db
from app.models import STATUS_PENDING, Endpoint, MaintenanceWindow, StatusChange, utcnow
from app.services.input_errors import InvalidInput
from app.services.openapi import Answer
from app.services.validation_messages import messages_of

logger = logging.getLogger(__name__)

MAX_TITLE_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000
# Longest occurrence of a recurring window: 31 days.
MAX_DURATION_MINUTES = 31 * 24 * 60
# Bounds on cron iteration: a window that recurs every minute still answers
# in a few milliseconds, and a span with more occurrences than this is cut.
_MAX_STEPS = 2000
CRON_EXAMPLE = "0 2 * * 0"
BAD_CRON = (f"is not a valid cron expression: give five fields (minute hour day-of-month month "
            f"day-of-week), such as {CRON_EXAMPLE} for Sundays at 02:00")
UNKNOWN_ZONE = "is not a known time zone: use an IANA name such as Europe/Berlin, or UTC"
TIME_FORMAT = "must be a time in ISO 8601, such as 2026-01-31T12:00:00Z"
# croniter's random field (R, or R(0-30)); an R inside a name (MAR, FRI) is none.
_RANDOM_FIELD = re.compile(r"\bR\b", re.IGNORECASE)


class InvalidMaintenanceWindow(InvalidInput):
    """Bad maintenance window input; ``errors`` maps each bad field to its message."""


class MaintenanceWindowInput(BaseModel):
    """A maintenance window as a client sends it (camelCase on the wire).

    ``startsAt``/``endsAt`` are ISO 8601 text; one without a zone is read in
    ``timeZone`` (UTC when that is not given either), so a form can send
    the wall-clock time a user typed.
    """

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              str_strip_whitespace=True, json_schema_extra={"examples": [
                                  {"title": "Database upgrade", "startsAt": "2026-01-31T22:00:00Z",
                                   "endsAt": "2026-01-31T23:30:00Z", "endpointIds": [1]},
                                  {"title": "Weekly backup", "cronExpression": CRON_EXAMPLE,
                                   "timeZone": "Europe/Berlin", "durationMinutes": 120, "endpointIds": [1]}]})

    title: str = Field(min_length=1, max_length=MAX_TITLE_LENGTH)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH)
    starts_at: str | None = Field(default=None, max_length=64)
    ends_at: str | None = Field(default=None, max_length=64)
    cron_expression: str | None = Field(default=None, max_length=100)
    time_zone: str | None = Field(default=None, max_length=64)
    duration_minutes: int | None = Field(default=None, ge=1, le=MAX_DURATION_MINUTES)
    endpoint_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(default_factory=list, max_length=10_000)
    groups: list[str] = Field(default_factory=list, max_length=1000)
    is_active: bool = True

    @field_validator("cron_expression")
    @classmethod
    def _valid_cron(cls, value):
        if value is None or value == "":
            return None
        value = " ".join(value.split())
        if len(value.split(" ")) != 5 or not croniter.is_valid(value):
            raise ValueError(BAD_CRON)
        if _RANDOM_FIELD.search(value):
            # croniter draws R anew each time it reads the expression, so the
            # window would move every time it is looked at.
            raise ValueError("picks a random time (R), which moves each time it is read: give fixed times")
        try:
            croniter(value, datetime(2000, 1, 1)).get_next(datetime)
        except CroniterError:  # valid fields that name no date, such as day 30 of February
            raise ValueError("is a cron expression that matches no date") from None
        return value

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value):
        if value is None or value == "":
            return None
        try:
            ZoneInfo(value)
        # OSError: a folder of the zone database, such as Europe, is no zone.
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(UNKNOWN_ZONE) from None
        return value

    @field_validator("description", "starts_at", "ends_at")
    @classmethod
    def _empty_is_none(cls, value):
        return value or None

    @field_validator("groups")
    @classmethod
    def _group_names(cls, value):
        names = []
        for name in value:
            name = name.strip()
            if not name or len(name) > 100:
                raise ValueError("must be group names of 1 to 100 characters")
            if name not in names:
                names.append(name)
        return names


@dataclass
class WindowSpec:
    """A validated window, ready to store."""

    title: str
    description: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    cron_expression: str | None
    time_zone: str | None
    duration_minutes: int | None
    endpoint_ids: list[int]
    group_names: list[str]
    is_active: bool


# --- validation ------------------------------------------------------------------


def parse_input(data: Any, *, strict: bool = False) -> WindowSpec:
    """Validate a payload; raise ``InvalidMaintenanceWindow`` naming every bad field.

    ``strict``: JSON's types as they are (the API); otherwise text is read
    as numbers and booleans, as a form sends them. Also checks that the
    endpoints and groups it names exist.
    """
    if not isinstance(data, dict):
        raise InvalidMaintenanceWindow({"body": "must be a JSON object"})
    errors: dict[str, str] = {}
    try:
        spec = MaintenanceWindowInput.model_validate(data, strict=strict)
    except ValidationError as exc:
        errors = messages_of(exc, MaintenanceWindowInput, unknown_field="is not a field of a maintenance window")
        spec = None
    bad = {key.split(".")[0] for key in errors}
    fields = _fields(data, spec, bad)
    errors.update(_schedule_errors(fields, bad))
    errors.update(_coverage_errors(fields, bad))
    if errors:
        raise InvalidMaintenanceWindow(errors)
    zone = ZoneInfo(spec.time_zone or "UTC")
    recurring = spec.cron_expression is not None
    return WindowSpec(
        title=spec.title, description=spec.description,
        starts_at=None if recurring else parse_time(spec.starts_at, zone),
        ends_at=None if recurring else parse_time(spec.ends_at, zone),
        cron_expression=spec.cron_expression, time_zone=spec.time_zone,
        duration_minutes=spec.duration_minutes if recurring else None,
        endpoint_ids=sorted(set(spec.endpoint_ids)), group_names=spec.groups, is_active=spec.is_active)


def _fields(data: dict, spec: MaintenanceWindowInput | None, bad: set[str]) -> dict:
    """The values to check against each other: the parsed ones where the
    model took them, else what was sent (the field's own error is already
    reported, and ``bad`` keeps it from being blamed twice)."""
    if spec is not None:
        return spec.model_dump(by_alias=True)
    names = {name: to_camel(name) for name in MaintenanceWindowInput.model_fields}
    sent = {wire: (data.get(wire, data.get(name)) if wire not in bad else None) for name, wire in names.items()}
    # As the model reads them: empty text is no value.
    return {wire: (None if isinstance(value, str) and not value.strip() else value) for wire, value in sent.items()}


def parse_time(text: str | None, zone: ZoneInfo) -> datetime | None:
    """An ISO 8601 time as UTC; one without a zone is read in ``zone``."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text.replace("z", "Z"))
    if moment.tzinfo is None:
        return to_utc(moment, zone)
    return moment.astimezone(timezone.utc)


def _schedule_errors(fields: dict, bad: set[str]) -> dict[str, str]:
    errors: dict[str, str] = {}
    cron, starts, ends = fields.get("cronExpression"), fields.get("startsAt"), fields.get("endsAt")
    zone = ZoneInfo(fields.get("timeZone") or "UTC") if "timeZone" not in bad else ZoneInfo("UTC")
    times = {}
    for name, text in (("startsAt", starts), ("endsAt", ends)):
        if name in bad or text is None:
            continue
        try:
            times[name] = parse_time(text, zone)
        except (ValueError, TypeError, OverflowError):
            errors[name] = TIME_FORMAT
    if cron is not None or "cronExpression" in bad:
        for name in ("startsAt", "endsAt"):
            if fields.get(name) is not None and name not in bad:
                errors[name] = "is for one-off windows; a recurring window (cronExpression) has durationMinutes"
        if fields.get("durationMinutes") is None and "durationMinutes" not in bad:
            errors["durationMinutes"] = "is required for a recurring window (minutes each occurrence lasts)"
        if fields.get("timeZone") is None and "timeZone" not in bad:
            errors["timeZone"] = "is required for a recurring window: the zone its cron times are read in"
        return errors
    if fields.get("durationMinutes") is not None and "durationMinutes" not in bad:
        errors["durationMinutes"] = "is for recurring windows (with cronExpression); a one-off window has endsAt"
    for name in ("startsAt", "endsAt"):
        if fields.get(name) is None and name not in bad:
            errors[name] = "is required (or give cronExpression for a recurring window)"
    if "startsAt" in times and "endsAt" in times and times["endsAt"] <= times["startsAt"]:
        errors["endsAt"] = "must be after the start (startsAt): the end is before the start"
    return errors


def _coverage_errors(fields: dict, bad: set[str]) -> dict[str, str]:
    errors: dict[str, str] = {}
    ids, groups = fields.get("endpointIds") or [], fields.get("groups") or []
    if "endpointIds" not in bad and ids:
        known = set(db.session.execute(select(Endpoint.id).where(Endpoint.id.in_(set(ids)))).scalars())
        unknown = sorted(set(ids) - known)
        if unknown:
            errors["endpointIds"] = "names endpoints that do not exist: " + ", ".join(map(str, unknown))
    if "groups" not in bad and groups:
        known = set(db.session.execute(select(Endpoint.group_name).where(Endpoint.group_name.in_(groups))).scalars())
        unknown = [name for name in groups if name not in known]
        if unknown:
            errors["groups"] = "names groups no endpoint belongs to: " + ", ".join(unknown)
    if not ids and not groups and not bad & {"endpointIds", "groups"}:
        errors["endpointIds"] = "must name at least one endpoint, or give groups"
    return errors


# --- changing windows -------------------------------------------------------------


def input_fields(window: MaintenanceWindow) -> dict:
    """A window's settings as input fields (camelCase), for PATCH and forms."""
    return {
        "title": window.title, "description": window.description,
        "startsAt": window.starts_at.isoformat() if window.starts_at else None,
        "endsAt": window.ends_at.isoformat() if window.ends_at else None,
        "cronExpression": window.cron_expression, "timeZone": window.time_zone,
        "durationMinutes": window.duration_minutes, "endpointIds": list(window.endpoint_ids or []),
        "groups": list(window.group_names or []), "isActive": window.is_active,
    }


def _apply(window: MaintenanceWindow, spec: WindowSpec) -> None:
    for name in ("title", "description", "starts_at", "ends_at", "cron_expression", "time_zone",
                 "duration_minutes", "endpoint_ids", "group_names", "is_active"):
        setattr(window, name, getattr(spec, name))


def apply_input(window: MaintenanceWindow, spec: WindowSpec) -> None:
    """Set a validated input (see ``parse_input``) on a window, new or
    stored; the caller adds and commits (configuration import)."""
    _apply(window, spec)


def create_window(data: Any, *, strict: bool = False) -> MaintenanceWindow:
    """Validate and store a new window (one transaction; bumps ``config_version``)."""
    spec = parse_input(data, strict=strict)
    window = MaintenanceWindow()
    _apply(window, spec)
    db.session.add(window)
    db.session.commit()
    logger.info("maintenance window %s (%s) created: %s", window.id, window.title, describe(window))
    return window


def update_window(window: MaintenanceWindow, data: Any, *, partial: bool, strict: bool = False) -> MaintenanceWindow:
    """Replace (``partial=False``) or patch a window's settings."""
    if not isinstance(data, dict):
        raise InvalidMaintenanceWindow({"body": "must be a JSON object"})
    if partial:
        merged = {**input_fields(window), **data}
        # Switching kind by PATCH drops the other kind's fields.
        if data.get("cronExpression"):
            merged.update({key: data.get(key) for key in ("startsAt", "endsAt")})
        elif "startsAt" in data or "endsAt" in data:
            merged.update({key: data.get(key) for key in ("cronExpression", "durationMinutes")})
    else:
        merged = data
    spec = parse_input(merged, strict=strict)
    _apply(window, spec)
    db.session.commit()
    logger.info("maintenance window %s (%s) updated: %s", window.id, window.title, describe(window))
    return window


def delete_window(window: MaintenanceWindow) -> None:
    """Delete a window; results in its past occurrences are no longer marked."""
    logger.info("maintenance window %s (%s) deleted", window.id, window.title)
    db.session.delete(window)
    db.session.commit()


def get_window(window_id: int) -> MaintenanceWindow | None:
    return db.session.get(MaintenanceWindow, window_id)


def list_windows() -> list[MaintenanceWindow]:
    """Every window, by id."""
    return list(db.session.execute(select(MaintenanceWindow).order_by(MaintenanceWindow.id)).scalars())


class MaintenanceWindowAnswer(Answer):
    """A window as the API answers it (``to_dict``): its settings as a
    client sends them, times in UTC, with its current and next occurrence."""

    id: int
    title: str
    description: str | None
    starts_at: datetime | None = Field(description="One-off windows: the start (UTC)")
    ends_at: datetime | None = Field(description="One-off windows: the end (UTC)")
    cron_expression: str | None = Field(description="Recurring windows: when each occurrence starts")
    time_zone: str | None = Field(description="Recurring windows: the IANA zone the cron times are read in")
    duration_minutes: int | None = Field(description="Recurring windows: how long each occurrence lasts")
    endpoint_ids: list[int]
    groups: list[str]
    is_active: bool
    kind: Literal["oneOff", "recurring"]
    in_progress: bool
    current_ends_at: datetime | None = Field(description="When the occurrence in progress ends")
    next_starts_at: datetime | None = Field(description="When the next occurrence starts (none once a one-off began)")
    next_ends_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None


class MaintenanceWindowListAnswer(Answer):
    maintenance_windows: list[MaintenanceWindowAnswer]


def to_dict(window: MaintenanceWindow, now: datetime | None = None) -> dict:
    """A window as the API answers it, with its current and next occurrence."""
    now = now or utcnow()
    schedule = Schedule.of(window)
    current = schedule.occurrence_at(now) if window.is_active else None
    upcoming = schedule.next_after(now) if window.is_active else None
    return {
        "id": window.id, **input_fields(window), "kind": "recurring" if window.is_recurring else "oneOff",
        "inProgress": current is not None,
        "currentEndsAt": current.ends_at.isoformat() if current else None,
        "nextStartsAt": upcoming.starts_at.isoformat() if upcoming else None,
        "nextEndsAt": upcoming.ends_at.isoformat() if upcoming else None,
        "createdAt": window.created_at.isoformat() if window.created_at else None,
        "updatedAt": window.updated_at.isoformat() if window.updated_at else None,
    }


def describe(window: MaintenanceWindow) -> str:
    """The schedule in a few words: ``cron 0 2 * * 0 (Europe/Berlin) for 120 min``."""
    if window.is_recurring:
        return f"cron {window.cron_expression} ({window.time_zone}) for {window.duration_minutes} min"
    return f"{window.starts_at:%Y-%m-%d %H:%M} to {window.ends_at:%Y-%m-%d %H:%M} UTC"


# --- the schedule -------------------------------------------------------------------


def to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    """A wall-clock time in ``zone`` as UTC.

    A time in a repeated hour is its first pass; a time in a skipped hour
    is the moment the clocks jumped (the first instant that exists after it).
    """
    first = local.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    if first.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None):
        return first
    # In a gap: fold 0 and fold 1 read it with the offsets on either side of
    # the jump, so the jump lies between them; find it to the second.
    later = local.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)
    low, high = int(min(first, later).timestamp()), int(max(first, later).timestamp())
    before = datetime.fromtimestamp(low, timezone.utc).astimezone(zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, timezone.utc).astimezone(zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, timezone.utc)


def _wall_clock(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


@dataclass(frozen=True)
class Occurrence:
    """One span of a window, in UTC."""

    starts_at: datetime
    ends_at: datetime

    def covers(self, moment: datetime) -> bool:
        return self.starts_at <= moment < self.ends_at


class Schedule:
    """When a window is in effect, whatever its kind."""

    def __init__(self, *, starts_at=None, ends_at=None, cron_expression=None, time_zone=None,
                 duration_minutes=None):
        self.one_off = None if cron_expression else Occurrence(starts_at, ends_at)
        self.cron = cron_expression
        self.zone = ZoneInfo(time_zone or "UTC")
        self.duration = timedelta(minutes=duration_minutes or 0)

    @classmethod
    def of(cls, window: MaintenanceWindow) -> Schedule:
        return cls(starts_at=window.starts_at, ends_at=window.ends_at, cron_expression=window.cron_expression,
                   time_zone=window.time_zone, duration_minutes=window.duration_minutes)

    def _starts_before(self, moment: datetime) -> Iterator[datetime]:
        """Starts at or before ``moment``, newest first."""
        # In the repeated hour the wall clock reads earlier than the first
        # pass it repeats, so start as much later as the clocks went back.
        back = ((moment - timedelta(hours=3)).astimezone(self.zone).utcoffset()
                - moment.astimezone(self.zone).utcoffset())
        local = _wall_clock(moment, self.zone) + max(back, timedelta(0)) + timedelta(minutes=1)
        found = croniter(self.cron, local)
        for _ in range(_MAX_STEPS):
            try:
                start = to_utc(found.get_prev(datetime), self.zone)
            except CroniterError:  # no earlier date matches
                return
            if start <= moment:
                yield start

    def _starts_after(self, moment: datetime) -> Iterator[datetime]:
        """Starts after ``moment``, oldest first."""
        found = croniter(self.cron, _wall_clock(moment, self.zone))
        for _ in range(_MAX_STEPS):
            try:
                start = to_utc(found.get_next(datetime), self.zone)
            except CroniterError:  # no later date matches
                return
            if start > moment:
                yield start

    def occurrence_at(self, moment: datetime) -> Occurrence | None:
        """The occurrence in effect at ``moment``, or None.

        Every occurrence of a recurring window lasts as long, so the one that
        started last (at or before ``moment``) is the only one that can still run.
        """
        if self.one_off is not None:
            return self.one_off if self.one_off.covers(moment) else None
        start = next(self._starts_before(moment), None)
        if start is not None and moment < start + self.duration:
            return Occurrence(start, start + self.duration)
        return None

    def next_after(self, moment: datetime) -> Occurrence | None:
        """The first occurrence that starts after ``moment``, or None."""
        if self.one_off is not None:
            return self.one_off if self.one_off.starts_at > moment else None
        start = next(self._starts_after(moment), None)
        return Occurrence(start, start + self.duration) if start is not None else None

    def occurrences(self, start: datetime, end: datetime) -> list[Occurrence]:
        """Occurrences overlapping ``start`` to ``end``, oldest first (at most a few thousand)."""
        if self.one_off is not None:
            one = self.one_off
            return [one] if one.starts_at < end and one.ends_at > start else []
        found = []
        current = self.occurrence_at(start)
        if current is not None:
            found.append(current)
        for begin in self._starts_after(start):
            if begin >= end:
                break
            found.append(Occurrence(begin, begin + self.duration))
        return found


# --- what is covered when -----------------------------------------------------------


def covers(window: MaintenanceWindow, endpoint_id: int, group: str | None) -> bool:
    """Whether ``window`` names the endpoint or its group (at whatever time)."""
    return endpoint_id in (window.endpoint_ids or ()) or (group is not None and group in (window.group_names or ()))


class Coverage:
    """The active windows and what they cover, read once on first use.

    ``window_for(endpoint_id, group, moment)``: the window an endpoint is in
    at ``moment`` (None when it is in none). Loaded lazily, so the consensus
    pays one query only when a change would alert.
    """

    def __init__(self):
        self._windows: list[tuple[MaintenanceWindow, Schedule]] | None = None

    @property
    def windows(self) -> list[tuple[MaintenanceWindow, Schedule]]:
        if self._windows is None:
            rows = db.session.execute(
                select(MaintenanceWindow).where(MaintenanceWindow.is_active.is_(True)).order_by(MaintenanceWindow.id)
            ).scalars()
            self._windows = [(window, Schedule.of(window)) for window in rows]
        return self._windows

    def applying_to(self, endpoint_id: int, group: str | None) -> list[tuple[MaintenanceWindow, Schedule]]:
        return [(w, s) for w, s in self.windows if covers(w, endpoint_id, group)]

    def window_for(self, endpoint_id: int, group: str | None, moment: datetime) -> MaintenanceWindow | None:
        for window, schedule in self.applying_to(endpoint_id, group):
            if schedule.occurrence_at(moment) is not None:
                return window
        return None


def reason_text(window: MaintenanceWindow) -> str:
    """How a held-back alert names its window: ``maintenance window 3 “DB upgrade”``."""
    return f"maintenance window {window.id} “{window.title}”"


def in_maintenance(endpoint: Endpoint, moment: datetime | None = None) -> MaintenanceWindow | None:
    """The window ``endpoint`` is in at ``moment`` (default now), or None."""
    return Coverage().window_for(endpoint.id, endpoint.group_name, moment or utcnow())


def endpoints_in_maintenance(groups: dict[int, str | None], moment: datetime | None = None, *,
                             coverage: Coverage | None = None) -> dict[int, MaintenanceWindow]:
    """Of the endpoints in ``groups`` (each endpoint id with its group), those
    in a window at ``moment`` (default now), with the window. ``coverage``:
    windows already read for the same request."""
    moment = moment or utcnow()
    coverage = coverage or Coverage()
    if not coverage.windows:
        return {}
    out = {}
    for endpoint_id, group in groups.items():
        window = coverage.window_for(endpoint_id, group, moment)
        if window is not None:
            out[endpoint_id] = window
    return out


def active_windows(moment: datetime | None = None) -> list[tuple[MaintenanceWindow, Occurrence]]:
    """The windows in effect at ``moment`` (default now), with their occurrence."""
    moment = moment or utcnow()
    out = []
    for window, schedule in Coverage().windows:
        occurrence = schedule.occurrence_at(moment)
        if occurrence is not None:
            out.append((window, occurrence))
    return out


@dataclass(frozen=True)
class Notice:
    """A window to announce beside some endpoints: in progress or coming soon."""

    title: str
    description: str | None
    starts_at: datetime
    ends_at: datetime
    in_progress: bool


# How far ahead a status page announces maintenance.
NOTICE_AHEAD = timedelta(days=7)


def notices(groups: dict[int, str | None], moment: datetime | None = None,
            ahead: timedelta = NOTICE_AHEAD) -> list[Notice]:
    """The windows covering any of the endpoints in ``groups`` (each endpoint
    id with its group) that are in progress at ``moment`` or start within
    ``ahead``, soonest first, one notice per window."""
    moment = moment or utcnow()
    coverage = Coverage()
    if not coverage.windows:
        return []
    found = []
    for window, schedule in coverage.windows:
        if not any(covers(window, endpoint_id, group) for endpoint_id, group in groups.items()):
            continue
        current = schedule.occurrence_at(moment)
        upcoming = current or schedule.next_after(moment)
        if upcoming is None or upcoming.starts_at > moment + ahead:
            continue
        found.append(Notice(window.title, window.description, upcoming.starts_at, upcoming.ends_at,
                            current is not None))
    return sorted(found, key=lambda notice: (not notice.in_progress, notice.starts_at))


def covered_spans(endpoint_ids: list[int], start: datetime, end: datetime, *,
                  coverage: Coverage | None = None) -> dict[int, list[tuple[datetime, datetime]]]:
    """Per endpoint, the spans between ``start`` and ``end`` it spent in
    maintenance, merged and clipped; endpoints never in one are left out."""
    coverage = coverage or Coverage()
    if not coverage.windows or not endpoint_ids:
        return {}
    groups = dict(db.session.execute(
        select(Endpoint.id, Endpoint.group_name).where(Endpoint.id.in_(endpoint_ids))).all())
    by_window: dict[int, list[Occurrence]] = {}
    out = {}
    for endpoint_id in endpoint_ids:
        spans = []
        for window, schedule in coverage.applying_to(endpoint_id, groups.get(endpoint_id)):
            if window.id not in by_window:
                by_window[window.id] = schedule.occurrences(start, end)
            spans.extend((max(o.starts_at, start), min(o.ends_at, end)) for o in by_window[window.id])
        if spans:
            out[endpoint_id] = _merged(spans)
    return out


def _merged(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[list[datetime]] = []
    for begin, finish in sorted(spans):
        if merged and begin <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], finish)
        else:
            merged.append([begin, finish])
    return [(begin, finish) for begin, finish in merged if finish > begin]


def in_spans(moment: datetime, spans: list[tuple[datetime, datetime]]) -> bool:
    """Whether ``moment`` falls in one of ``spans``."""
    return any(begin <= moment < finish for begin, finish in spans)


def marks(endpoint_id: int, moments: list[datetime]) -> list[bool]:
    """For each of an endpoint's result times, whether it was in maintenance:
    results are marked from the windows, nothing is stored on them."""
    if not moments:
        return []
    spans = covered_spans([endpoint_id], min(moments), max(moments) + timedelta(seconds=1)).get(endpoint_id, [])
    return [in_spans(moment, spans) for moment in moments]


# --- alerts held back ------------------------------------------------------------------


def release_held_alerts(*, now: datetime | None = None) -> list[int]:
    """Raise, once a window has ended, the alert it held back; returns the
    endpoint ids that got one. Commits.

    For each endpoint with a held-back alert that is in no window now and
    whose status differs from the one last alerted the way ``alert_for``
    would alert (still DOWN; UP again after a DOWN that was alerted), a
    status change carrying that alert is written, so ``alerts.raise_alerts``
    sends it like any other. The endpoint's ``alerted_status`` is moved by
    a conditional UPDATE first, and the change is written only if that
    changed the row: a consensus change or another sweep in between wins.
    """
    from app.services import configuration
    from app.services.consensus import alert_for

    now = now or utcnow()
    if not configuration.may_alert():
        return []
    held = select(StatusChange.endpoint_id).where(StatusChange.suppressed_alert.is_not(None)).distinct()
    rows = db.session.execute(
        select(Endpoint.id, Endpoint.name, Endpoint.group_name, Endpoint.status, Endpoint.alerted_status,
               Endpoint.alert_on_partial, Endpoint.last_failure_reason)
        .where(Endpoint.id.in_(held), Endpoint.is_paused.is_(False))
    ).all()
    due = []
    for row in rows:
        event, alerted = alert_for(row.status, row.alerted_status, row.alert_on_partial)
        if event is not None:
            due.append((row, event, alerted))
    if not due:
        db.session.commit()
        return []
    coverage = Coverage()
    table = Endpoint.__table__
    released = []
    for row, event, alerted in due:
        if coverage.window_for(row.id, row.group_name, now) is not None:
            continue
        last = db.session.execute(
            select(StatusChange).where(StatusChange.endpoint_id == row.id, StatusChange.suppressed_alert == event)
            .order_by(StatusChange.id.desc()).limit(1)).scalar_one_or_none()
        previous = row.alerted_status if row.alerted_status is not None else STATUS_PENDING
        condition = (table.c.alerted_status.is_(None) if row.alerted_status is None
                     else table.c.alerted_status == row.alerted_status)
        claimed = db.session.execute(
            update(table).where(table.c.id == row.id, table.c.status == row.status, condition)
            .values(alerted_status=alerted)).rowcount
        if claimed != 1:
            continue
        window = last.suppressed_by if last is not None else "a maintenance window"
        reason = f"still {row.status} after {window} ended"
        if row.last_failure_reason and event != "up":
            reason = f"{row.last_failure_reason}; {reason}"
        db.session.add(StatusChange(
            endpoint_id=row.id, from_status=last.from_status if last is not None else previous,
            to_status=row.status, changed_at=now, reason=reason, alert_event=event))
        released.append(row.id)
        logger.info("endpoint %s (%s): %s alert held back by %s raised now that it ended", row.id, row.name,
                    event, window)
    db.session.commit()
    return released


# --- replication ---------------------------------------------------------------------


def replicated() -> list[dict]:
    """Every window as the primary sends it with the configuration (camelCase)."""
    return [{"id": w.id, **input_fields(w), "createdAt": w.created_at.isoformat()} for w in list_windows()]
