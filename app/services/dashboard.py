"""What the dashboard shows, read with a fixed number of queries.

Whatever the number of endpoints: one query for the endpoints, two for 24
hours of history (rolled-up hours and the raw tail, see ``rollups``) and
one for the certificates of HTTPS endpoints. Nothing is read per endpoint.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select, text

from app.extensions import db
from app.models import STATUS_DOWN, STATUS_PARTIAL, STATUS_PENDING, STATUS_UP, Endpoint, UTCDateTime, utcnow
from app.services.rollups import hourly_rows
from app.services import endpoints

STATUS_PAUSED = "PAUSED"
FILTERS = (STATUS_UP, STATUS_PARTIAL, STATUS_DOWN, STATUS_PENDING, STATUS_PAUSED)
SPARKLINE_HOURS = 24
# A row changed within this much before the last refresh is sent again, so a
# result committed just after a refresh read the table is never missed (a
# result's UPDATE and its COMMIT are milliseconds apart). The browser skips
# re-sent rows whose version it already shows.
CHANGE_OVERLAP = timedelta(seconds=1)


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
    locations_voting: int = 0
    locations_up: int = 0
    uptime_24h: float | None = None
    # Average response time per hour, oldest first; None where nothing ran.
    sparkline: list[float | None] = field(default_factory=list)
    cert_days: int | None = None

    @property
    def shown_status(self) -> str:
        return STATUS_PAUSED if self.is_paused else self.status

    @property
    def version(self) -> str:
        """Changes whenever anything the row shows changes."""
        data = (self.name, self.check_type, self.target, self.port, self.group, self.shown_status,
                self.last_checked_at, self.last_response_time_ms, self.last_failure_reason,
                self.locations_voting, self.locations_up, self.uptime_24h, self.sparkline, self.cert_days)
        return hashlib.blake2s(repr(data).encode(), digest_size=6).hexdigest()


_COLUMNS = (Endpoint.id, Endpoint.name, Endpoint.check_type, Endpoint.target, Endpoint.port,
            Endpoint.group_name, Endpoint.status, Endpoint.is_paused, Endpoint.last_checked_at,
            Endpoint.last_response_time_ms, Endpoint.last_failure_reason, Endpoint.updated_at,
            Endpoint.locations_voting, Endpoint.locations_up)


def _filtered(query, *, search: str | None, status: str | None):
    if search:
        query = query.where(endpoints.matching(search))
    status = (status or "").upper()
    if status == STATUS_PAUSED:
        query = query.where(Endpoint.is_paused.is_(True))
    elif status in FILTERS:
        query = query.where(Endpoint.status == status, Endpoint.is_paused.is_(False))
    return query


def endpoint_rows(*, search: str | None = None, status: str | None = None) -> list[EndpointRow]:
    """The endpoints matching the filter, by name, without history yet."""
    query = _filtered(select(*_COLUMNS), search=search, status=status).order_by(Endpoint.name, Endpoint.id)
    return [EndpointRow(*row) for row in db.session.execute(query)]


def add_history(rows: list[EndpointRow], now: datetime | None = None, *, all_endpoints: bool = True) -> None:
    """Fill in 24 h uptime, sparkline and certificate days of ``rows``.

    ``all_endpoints`` reads history for every endpoint (cheaper than an IN
    list of hundreds of ids); otherwise only for ``rows``.
    """
    if not rows:
        return
    now = now or utcnow()
    last_hour = int(now.timestamp()) // 3600
    first_hour = last_hour - SPARKLINE_HOURS + 1
    # Hour granularity: the hour the 24 h window starts in counts whole.
    window_first = int((now - timedelta(hours=24)).timestamp()) // 3600
    ids = None if all_endpoints else [r.id for r in rows]
    # Per endpoint: [checks, ok checks, then (ms sum, ms count) per sparkline hour].
    sums: dict[int, list] = {}
    start = datetime.fromtimestamp(window_first * 3600, timezone.utc)
    for endpoint_id, hour, tally in hourly_rows(start, now, endpoint_ids=ids):
        entry = sums.get(endpoint_id)
        if entry is None:
            entry = sums[endpoint_id] = [0, 0, [0.0] * SPARKLINE_HOURS, [0] * SPARKLINE_HOURS]
        entry[0] += tally.checks
        entry[1] += tally.ok_checks
        if first_hour <= hour <= last_hour:
            entry[2][hour - first_hour] += tally.response_ms_sum
            entry[3][hour - first_hour] += tally.response_ms_count
    certificates = certificate_days(ids)
    for row in rows:
        entry = sums.get(row.id)
        if entry is None:
            row.uptime_24h, row.sparkline = None, [None] * SPARKLINE_HOURS
        else:
            checks, ok, ms_sums, ms_counts = entry
            row.uptime_24h = 100.0 * ok / checks if checks else None
            row.sparkline = [total / count if count else None for total, count in zip(ms_sums, ms_counts)]
        row.cert_days = certificates.get(row.id)


def certificate_days(endpoint_ids: list[int] | None = None) -> dict[int, int]:
    """Days left on the certificate in each HTTPS endpoint's latest result."""
    where = "e.check_type = 'http' AND e.target LIKE 'https:%'"
    params = {}
    sql = ("SELECT e.id AS endpoint_id, r.check_metadata AS metadata FROM endpoints e "
           "JOIN response_times r ON r.endpoint_id = e.id AND r.checked_at = e.last_checked_at "
           f"WHERE {where}")
    statement = text(sql)
    if endpoint_ids is not None:
        if not endpoint_ids:
            return {}
        statement = text(sql + " AND e.id IN :ids").bindparams(
            db.bindparam("ids", expanding=True))
        params["ids"] = endpoint_ids
    days = {}
    for row in db.session.execute(statement, params):
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


def view_digest(rows: list[EndpointRow]) -> str:
    """Identifies which endpoints a view lists, in order: a change means re-render it whole."""
    return hashlib.blake2s(",".join(str(r.id) for r in rows).encode(), digest_size=8).hexdigest()


def changed_since(rows: list[EndpointRow], since: datetime) -> list[EndpointRow]:
    """Rows whose endpoint changed (a new result or new settings) after ``since``.

    Every result updates its endpoint row, which bumps ``updated_at``.
    """
    edge = since - CHANGE_OVERLAP
    return [r for r in rows if r.updated_at is not None and r.updated_at > edge]


__all__ = ["EndpointRow", "FILTERS", "STATUS_PAUSED", "UTCDateTime", "add_history", "certificate_days",
           "changed_since", "endpoint_rows", "status_counts", "view_digest"]
