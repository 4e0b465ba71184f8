"""What the dashboard shows: endpoints x locations, a page at a time.

One row per endpoint and one column per location (instance): each cell the
location's view of the endpoint (status colour and response time; stale:
grey with its age; probe-offline: marked), then the consensus with how
many voting locations see it up, the consensus uptime over 24 h and a
heartbeat bar of the latest results. A standalone or a dependent has one
location: its own.

Read with a fixed number of queries whatever the number of endpoints:
the page's endpoints (sorted, filtered and cut in SQL) and their count,
the counts by status, the columns, and for the page's rows only: the
locations' state (``consensus.locations_of``), consensus uptime
(``consensus.uptimes``), the heartbeats (one windowed query) and the
certificates. Nothing is read per endpoint.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from flask import current_app
from sqlalchemy import String, and_, case, exists, false, func, or_, select, text, type_coerce

from app.extensions import db
from app.models import (
    STATUS_DOWN,
    STATUS_PARTIAL,
    STATUS_PENDING,
    STATUS_UP,
    Endpoint,
    LocationStatus,
    MonitoringInstance,
    ResponseTime,
    utcnow,
)
from app.services import configuration, consensus, endpoints, maintenance

STATUS_PAUSED = "PAUSED"
# What the consensus filter takes: the status a row's badge shows.
FILTERS = (STATUS_UP, STATUS_PARTIAL, STATUS_DOWN, STATUS_PENDING, STATUS_PAUSED)
# What a cell can show, and what the location-status filter takes.
CELL_STALE, CELL_OFFLINE = "STALE", "OFFLINE"
LOCATION_FILTERS = (STATUS_UP, STATUS_DOWN, STATUS_PENDING, CELL_STALE, CELL_OFFLINE)
SORTS = ("status", "name", "group")
DEFAULT_SORT = "status"
PAGE_SIZE = 100
SEARCH_LIMIT = 200
# Results in a heartbeat bar, newest on the right.
HEARTBEATS = 40
# A row changed within this much before the last refresh is sent again, so a
# result committed just after a refresh read the table is never missed (a
# result's UPDATE and its COMMIT are milliseconds apart). The browser skips
# re-sent rows whose version it already shows.
CHANGE_OVERLAP = timedelta(seconds=1)
# Sort order of "status": what needs a look first.
_STATUS_RANK = {STATUS_DOWN: 0, STATUS_PARTIAL: 1, STATUS_PENDING: 2, STATUS_UP: 3}
_PAUSED_RANK = 4


class InvalidFilter(ValueError):
    """A dashboard filter was given a value it does not take; ``errors``
    names each field with what it takes."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{name} {message}" for name, message in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Filters:
    """What the dashboard lists, in what order, and which page of it."""

    q: str = ""
    consensus: str = ""
    location: str = ""
    status: str = ""
    sort: str = DEFAULT_SORT
    page: int = 1

    @classmethod
    def parse(cls, args, columns: list[Location]) -> Filters:
        """The filters of a request's query string; InvalidFilter naming every
        bad field. An empty value means "any"; a search longer than
        SEARCH_LIMIT is cut there; a page past the last shows the last."""
        errors = {}
        consensus_status = (args.get("consensus") or "").strip().upper()
        if consensus_status and consensus_status not in FILTERS:
            errors["consensus"] = f"must be one of {', '.join(FILTERS)}"
        status = (args.get("status") or "").strip().upper()
        if status and status not in LOCATION_FILTERS:
            hint = (f" (a location's status; {status} is a consensus: use consensus={status})"
                    if status in FILTERS else "")
            errors["status"] = f"must be one of {', '.join(LOCATION_FILTERS)}{hint}"
        location = (args.get("location") or "").strip()
        if location and location not in {column.instance_id for column in columns}:
            errors["location"] = "must be the id of one of this dashboard's locations"
        sort = (args.get("sort") or DEFAULT_SORT).strip().lower()
        if sort not in SORTS:
            errors["sort"] = f"must be one of {', '.join(SORTS)}"
        raw_page = (args.get("page") or "1").strip()
        number = raw_page.lstrip("0") if raw_page.isascii() and raw_page.isdigit() else ""
        page = int(number[:10]) if number else 0  # however far past the last, it shows the last
        if page < 1:
            errors["page"] = "must be a whole number from 1"
        if errors:
            raise InvalidFilter(errors)
        return cls(q=(args.get("q") or "").strip()[:SEARCH_LIMIT], consensus=consensus_status,
                   location=location, status=status, sort=sort, page=page)

    @property
    def narrowed(self) -> bool:
        """Whether anything is filtered out."""
        return bool(self.q or self.consensus or self.location or self.status)

    def query(self, **changes) -> dict:
        """Query-string arguments of these filters with ``changes``, defaults left out."""
        values = {"q": self.q, "consensus": self.consensus, "location": self.location, "status": self.status,
                  "sort": self.sort, "page": self.page, **changes}
        defaults = {"sort": DEFAULT_SORT, "page": 1}
        return {key: value for key, value in values.items() if value and defaults.get(key) != value}


@dataclass(frozen=True)
class Location:
    """A column of the matrix: one instance and where it checks from."""

    instance_id: str
    name: str
    location: str
    is_self: bool = False


@dataclass(frozen=True)
class Cell:
    """One location's view of one endpoint, as a cell shows it.

    ``state``: UP, DOWN or PENDING while fresh, STALE (grey, with its age),
    OFFLINE (the location is probe-offline), or None where the location
    does not check the endpoint.
    """

    instance_id: str
    state: str | None
    response_time_ms: float | None = None
    checked_at: datetime | None = None
    failure_reason: str | None = None
    age: str | None = None
    probe_reason: str | None = None


@dataclass(frozen=True)
class Heartbeat:
    """One result in a heartbeat bar."""

    checked_at: datetime
    is_ok: bool
    location: str
    response_time_ms: float | None
    failure_reason: str | None


@dataclass
class EndpointRow:
    """One endpoint as the dashboard shows it."""

    id: int
    name: str
    check_type: str
    target: str
    port: int | None
    group: str | None
    status: str
    is_paused: bool
    last_checked_at: datetime | None
    last_response_time_ms: float | None
    last_failure_reason: str | None
    updated_at: datetime
    # The consensus behind ``status``: voting locations, and those seeing it UP.
    locations_voting: int
    locations_up: int
    # What ``consensus.locations_of`` needs to judge the locations.
    location_ids: list | None
    interval_seconds: int
    timeout_seconds: float
    uptime_24h: float | None = None
    cells: list[Cell] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)
    cert_days: int | None = None
    # The maintenance window it is in (its title), None when in none.
    maintenance: str | None = None

    @property
    def shown_status(self) -> str:
        return STATUS_PAUSED if self.is_paused else self.status

    @property
    def version(self) -> str:
        """Changes whenever anything the row shows changes."""
        beats = (len(self.heartbeats), self.heartbeats[-1].checked_at if self.heartbeats else None)
        # Uptime as shown (two decimals): time passing moves it in the last digits.
        uptime = None if self.uptime_24h is None else f"{self.uptime_24h:.2f}"
        data = (self.name, self.check_type, self.target, self.port, self.group, self.shown_status,
                self.last_checked_at, self.last_response_time_ms, self.last_failure_reason,
                self.locations_voting, self.locations_up, uptime, self.cells, beats, self.cert_days,
                self.maintenance)
        return hashlib.blake2s(repr(data).encode(), digest_size=6).hexdigest()


@dataclass
class Page:
    """One page of the matrix."""

    rows: list[EndpointRow]
    columns: list[Location]
    filters: Filters
    total: int
    # Locations probe-offline now: a change re-renders the whole table.
    offline: frozenset[str] = frozenset()

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / PAGE_SIZE))

    @property
    def first_shown(self) -> int:
        return (self.filters.page - 1) * PAGE_SIZE + 1 if self.rows else 0

    @property
    def digest(self) -> str:
        """Identifies what the page lists, in order, and its columns: a change
        means render it whole."""
        listed = ",".join(str(r.id) for r in self.rows)
        columns = ",".join(c.instance_id for c in self.columns)
        data = f"{listed}|{columns}|{','.join(sorted(self.offline))}|{self.total}"
        return hashlib.blake2s(data.encode(), digest_size=8).hexdigest()

    def page_links(self, around: int = 2) -> list[int | None]:
        """Page numbers to link: the first, the last and those near this one;
        None where some are left out."""
        current, last = self.filters.page, self.pages
        shown = sorted({1, last, *range(max(1, current - around), min(last, current + around) + 1)})
        links: list[int | None] = []
        for number in shown:
            if links and number - links[-1] > 1:
                links.append(None)
            links.append(number)
        return links


_COLUMNS = (Endpoint.id, Endpoint.name, Endpoint.check_type, Endpoint.target, Endpoint.port,
            Endpoint.group_name, Endpoint.status, Endpoint.is_paused, Endpoint.last_checked_at,
            Endpoint.last_response_time_ms, Endpoint.last_failure_reason, Endpoint.updated_at,
            Endpoint.locations_voting, Endpoint.locations_up, Endpoint.location_ids,
            Endpoint.interval_seconds, Endpoint.timeout_seconds)


def columns() -> list[Location]:
    """The matrix's columns: every member of the cluster on a primary (a
    fenced one too), this instance alone on a standalone or a dependent."""
    state = configuration.snapshot()
    settings = current_app.config["SETTINGS"]
    own = Location(state.instance_id, settings.instance_name, settings.instance_location, is_self=True)
    if not state.is_clustered or state.is_dependent:
        return [own]
    members = db.session.execute(select(MonitoringInstance.id, MonitoringInstance.name,
                                        MonitoringInstance.location)).all()
    others = sorted((Location(i, name, location) for i, name, location in members if i != state.instance_id),
                    key=lambda column: (column.location, column.name, column.instance_id))
    return [own, *others]


def _status_rank():
    return case((Endpoint.is_paused.is_(True), _PAUSED_RANK),
                *((Endpoint.status == status, rank) for status, rank in _STATUS_RANK.items()),
                else_=len(_STATUS_RANK))


def _order(sort: str) -> list:
    if sort == "name":
        return [Endpoint.name, Endpoint.id]
    if sort == "group":
        # Endpoints without a group last, then the worst first within a group.
        return [Endpoint.group_name.is_(None), Endpoint.group_name, _status_rank(), Endpoint.name, Endpoint.id]
    return [_status_rank(), Endpoint.name, Endpoint.id]


def _fresh(now: datetime, own_id: str, probes: dict):
    """SQL: a location_status row (of an endpoint of the outer query) is fresh
    at ``now``, by ``consensus.freshness_window`` for each interval and
    timeout in use and each location's heartbeat interval."""
    default_beat = current_app.config["SETTINGS"].heartbeat_interval
    beats: dict[int, list[str]] = {0: [own_id]}
    for instance_id, probe in probes.items():
        if instance_id != own_id and probe.heartbeat_interval:
            beats.setdefault(probe.heartbeat_interval, []).append(instance_id)
    named = [i for ids in beats.values() for i in ids]
    groups = [(beat, LocationStatus.instance_id.in_(ids)) for beat, ids in beats.items()]
    groups.append((default_beat, LocationStatus.instance_id.not_in(named)))
    settings_in_use = db.session.execute(select(Endpoint.interval_seconds, Endpoint.timeout_seconds).distinct()).all()
    terms = []
    for interval, timeout in settings_in_use:
        for beat, which in groups:
            cutoff = now - consensus.freshness_window(interval, timeout, beat)
            terms.append(and_(Endpoint.interval_seconds == interval, Endpoint.timeout_seconds == timeout, which,
                              LocationStatus.last_checked_at >= cutoff))
    return or_(*terms) if terms else false()


def _location_condition(filters: Filters, now: datetime, location_columns: list[Location], probes: dict):
    """SQL: the endpoint has a location (``filters.location``, or any of the
    columns) in the state ``filters.status`` asks for."""
    offline = _offline(probes)
    own_id = next(c.instance_id for c in location_columns if c.is_self)
    conditions = [LocationStatus.endpoint_id == Endpoint.id]
    if filters.location:
        conditions.append(LocationStatus.instance_id == filters.location)
    else:
        conditions.append(LocationStatus.instance_id.in_([c.instance_id for c in location_columns]))
    status = filters.status
    if status == CELL_OFFLINE:
        conditions.append(LocationStatus.instance_id.in_(offline) if offline else false())
    elif status:
        if offline:
            conditions.append(LocationStatus.instance_id.not_in(offline))
        fresh = _fresh(now, own_id, probes)
        if status == CELL_STALE:
            conditions.append(and_(LocationStatus.last_checked_at.is_not(None), ~fresh))
        else:
            conditions.append(and_(LocationStatus.status == status,
                                   or_(LocationStatus.last_checked_at.is_(None), fresh)))
    return exists().where(*conditions)


def _offline(probes: dict) -> frozenset[str]:
    return frozenset(instance_id for instance_id, probe in probes.items() if probe.offline_since is not None)


def _conditions(filters: Filters, now: datetime, location_columns: list[Location], probes: dict) -> list:
    """SQL conditions on endpoints for ``filters``."""
    conditions = []
    if filters.q:
        conditions.append(endpoints.matching(filters.q))
    if filters.consensus == STATUS_PAUSED:
        conditions.append(Endpoint.is_paused.is_(True))
    elif filters.consensus:
        conditions += [Endpoint.status == filters.consensus, Endpoint.is_paused.is_(False)]
    if filters.location or filters.status:
        conditions.append(_location_condition(filters, now, location_columns, probes))
    return conditions


def page(filters: Filters, location_columns: list[Location], now: datetime | None = None) -> Page:
    """The page of endpoints ``filters`` asks for, without their cells yet
    (``add_matrix``). A page past the last is the last."""
    now = now or utcnow()
    probes = consensus.probe_states()
    conditions = _conditions(filters, now, location_columns, probes)
    total = db.session.execute(select(func.count()).select_from(Endpoint).where(*conditions)).scalar_one()
    last = max(1, math.ceil(total / PAGE_SIZE))
    if filters.page > last:
        filters = replace(filters, page=last)
    query = (select(*_COLUMNS).where(*conditions).order_by(*_order(filters.sort))
             .limit(PAGE_SIZE).offset((filters.page - 1) * PAGE_SIZE))
    rows = [EndpointRow(*row) for row in db.session.execute(query)]
    return Page(rows, location_columns, filters, total, _offline(probes))


def endpoint_rows(*, search: str | None = None, status: str | None = None) -> list[EndpointRow]:
    """Every endpoint matching a search and a consensus, by name, without cells."""
    filters = Filters(q=(search or "").strip()[:SEARCH_LIMIT],
                      consensus=(status or "").upper() if (status or "").upper() in FILTERS else "")
    query = (select(*_COLUMNS).where(*_conditions(filters, utcnow(), [], {}))
             .order_by(Endpoint.name, Endpoint.id))
    return [EndpointRow(*row) for row in db.session.execute(query)]


def age_label(delta: timedelta) -> str:
    """How old a stale location's latest result is, coarsely: "3 min", "2 h",
    "5 d" (changes at most once a minute, so a refresh rarely resends it)."""
    minutes = max(0, int(delta.total_seconds())) // 60
    if minutes < 1:
        return "<1 min"
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // 1440} d"


def _cells(row: EndpointRow, location_columns: list[Location], seen: dict[str, consensus.LocationRow],
           now: datetime) -> list[Cell]:
    cells = []
    for column in location_columns:
        view = seen.get(column.instance_id)
        if view is None:
            cells.append(Cell(column.instance_id, None))
            continue
        if view.probe_offline:
            state, age = CELL_OFFLINE, None
        elif not view.fresh and view.checked_at is not None:
            state, age = CELL_STALE, age_label(now - view.checked_at)
        else:
            state, age = view.status, None
        cells.append(Cell(column.instance_id, state, view.response_time_ms, view.checked_at,
                          view.failure_reason, age, view.probe_offline_reason))
    return cells


def add_cells(rows: list[EndpointRow], location_columns: list[Location], now: datetime) -> None:
    """Fill in each row's cells: its locations' state as the vote sees it at ``now``."""
    views = consensus.locations_of(rows, now) if rows else {}
    for row in rows:
        row.cells = _cells(row, location_columns, {view.instance_id: view for view in views.get(row.id, [])}, now)


def add_details(rows: list[EndpointRow], now: datetime) -> None:
    """Fill in consensus uptime over 24 h, heartbeats, certificate days and
    the maintenance window each is in (after ``add_cells``: the heartbeat
    range depends on the locations)."""
    if not rows:
        return
    ids = [r.id for r in rows]
    coverage = maintenance.Coverage()  # the windows, read once for both
    uptime = consensus.uptimes(ids, now, coverage=coverage)
    beats = heartbeats(rows, now)
    certificates = certificate_days(ids)
    held = maintenance.endpoints_in_maintenance({r.id: r.group for r in rows}, now, coverage=coverage)
    for row in rows:
        row.maintenance = held[row.id].title if row.id in held else None
        row.uptime_24h = uptime.get(row.id, {}).get(timedelta(hours=24))
        row.heartbeats = beats.get(row.id, [])
        row.cert_days = certificates.get(row.id)


def add_matrix(listed: Page, now: datetime | None = None) -> None:
    """Fill in everything the page's rows show."""
    now = now or utcnow()
    add_cells(listed.rows, listed.columns, now)
    add_details(listed.rows, now)


def heartbeats(rows: list[EndpointRow], now: datetime, count: int = HEARTBEATS) -> dict[int, list[Heartbeat]]:
    """The latest ``count`` results of each row's endpoint, oldest first, from
    every location: one windowed query over a recent range sized by each
    endpoint's interval and number of locations, so only a little more
    than ``count`` results per endpoint is read."""
    by_cutoff: dict[datetime, list[int]] = {}
    for row in rows:
        locations = max(1, sum(1 for cell in row.cells if cell.state is not None))
        rounds = math.ceil(count / locations) + 2
        by_cutoff.setdefault(now - timedelta(seconds=rounds * row.interval_seconds), []).append(row.id)
    if not by_cutoff:
        return {}
    results = ResponseTime.__table__.c
    recent = or_(*(and_(results.endpoint_id.in_(ids), results.checked_at >= cutoff)
                   for cutoff, ids in by_cutoff.items()))
    # checked_at as stored, parsed below: SQLAlchemy parses SQLite's
    # timestamps with a regular expression each, and a page holds thousands.
    numbered = (select(results.endpoint_id, type_coerce(results.checked_at, String).label("checked_at"),
                       results.is_ok, results.location, results.response_time_ms, results.failure_reason,
                       # In the index's order, so no sort is needed: results
                       # checked at the same moment come in any order.
                       func.row_number().over(partition_by=results.endpoint_id, order_by=results.checked_at.desc())
                       .label("n"))
                .where(recent).subquery())
    query = (select(numbered.c.endpoint_id, numbered.c.checked_at, numbered.c.is_ok, numbered.c.location,
                    numbered.c.response_time_ms, numbered.c.failure_reason)
             .where(numbered.c.n <= count))
    out: dict[int, list[Heartbeat]] = {}
    for endpoint_id, checked_at, *beat in db.session.execute(query):
        out.setdefault(endpoint_id, []).append(Heartbeat(_moment(checked_at), *beat))
    for beats in out.values():
        beats.sort(key=lambda beat: beat.checked_at)
    return out


def _moment(value) -> datetime:
    """A stored timestamp (naive UTC: text on SQLite, a datetime on PostgreSQL), timezone-aware."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=timezone.utc)


def certificate_days(endpoint_ids: list[int]) -> dict[int, int]:
    """Days left on the certificate in each HTTPS endpoint's latest result."""
    if not endpoint_ids:
        return {}
    statement = text(
        "SELECT e.id AS endpoint_id, r.check_metadata AS metadata FROM endpoints e "
        "JOIN response_times r ON r.endpoint_id = e.id AND r.checked_at = e.last_checked_at "
        "WHERE e.check_type = 'http' AND e.target LIKE 'https:%' AND e.id IN :ids"
    ).bindparams(db.bindparam("ids", expanding=True))
    days = {}
    for row in db.session.execute(statement, {"ids": endpoint_ids}):
        metadata = row.metadata
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        value = ((metadata or {}).get("certificateInfo") or {}).get("daysRemaining")
        if isinstance(value, int):
            days[row.endpoint_id] = value
    return days


def status_counts() -> dict[str, int]:
    """How many endpoints are in each shown status (paused apart)."""
    counts = dict.fromkeys(FILTERS, 0)
    query = select(Endpoint.status, Endpoint.is_paused, func.count()).group_by(Endpoint.status, Endpoint.is_paused)
    for status, paused, count in db.session.execute(query):
        key = STATUS_PAUSED if paused else status
        counts[key] = counts.get(key, 0) + count
    return counts


def changed_since(listed: Page, since: datetime, now: datetime | None = None) -> list[EndpointRow]:
    """The page's rows the refresh must send again, with everything they show.

    A row changed when its endpoint changed after ``since`` (each vote and
    each settings change bumps ``updated_at``), when a location applied a
    result to it (that state's ``updated_at``), or when time alone changed
    a cell: a location went stale, or a stale one's age moved on.
    """
    now = now or utcnow()
    edge = since - CHANGE_OVERLAP
    rows = listed.rows
    if not rows:
        return []
    touched = set(db.session.execute(
        select(LocationStatus.endpoint_id).where(LocationStatus.endpoint_id.in_([r.id for r in rows]),
                                                 LocationStatus.updated_at > edge).distinct()).scalars())
    add_cells(rows, listed.columns, now)
    changed = [row for row in rows if (row.updated_at is not None and row.updated_at > edge) or row.id in touched]
    # Untouched, a cell changes only by going stale or by its stale age
    # moving on: judged again at ``edge`` for rows with a stale cell now.
    sent = {row.id for row in changed}
    aging = [row for row in rows if row.id not in sent and any(c.state == CELL_STALE for c in row.cells)]
    before = consensus.locations_of(aging, edge) if aging else {}
    changed += [row for row in aging
                if _cells(row, listed.columns, {v.instance_id: v for v in before.get(row.id, [])}, edge) != row.cells]
    add_details(changed, now)
    return changed


__all__ = ["CELL_OFFLINE", "CELL_STALE", "Cell", "EndpointRow", "FILTERS", "Filters", "Heartbeat",
           "InvalidFilter", "LOCATION_FILTERS", "Location", "PAGE_SIZE", "Page", "SORTS", "STATUS_PAUSED",
           "add_cells", "add_details", "add_matrix", "age_label", "certificate_days", "changed_since", "columns",
           "endpoint_rows", "heartbeats", "page", "status_counts"]
