"""Results counted per hour and per day, and reading results over a time range.

Reading a day of raw results for 1,000 endpoints means aggregating 1.4
million rows; reading 24 hourly rows per endpoint and location is a few
milliseconds. So every result is counted as it is stored
(``count_results``, from ``results.store_results``, in the insert's
transaction): its endpoint's and location's hour in
``result_location_hours`` and day in ``result_location_days`` gain a check
(an upsert adding to the row). Only the rows the insert added are counted:
a result sent again (a dependent's outbox whose acknowledgement was lost, a
catch-up after a failover) is skipped by the insert's ``ON CONFLICT
(result_id) DO NOTHING`` and so counted nothing. A result that arrives late
(an outbox after an outage: results keep the time they were checked) is
added to its own hour and day, however old they are. So readers read
these rows alone for whole hours and days, with no job to have run first
and no raw results to add; they read raw results only for spans shorter
than an hour (the endpoint page's hour and day charts, the map's last hour,
the dashboard's heartbeats).

Concurrent writers: a row belongs to one location (instance), so only
batches of the same instance wait for each other, and they take the rows
in key order (hours, then days), so they never deadlock. Pruning
(``services/retention.py``) deletes raw results without touching the counts.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import bindparam, text

from app.extensions import db
from app.models import UTCDateTime

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass
class Tally:
    """Checks, successes and response times over some span."""

    checks: int = 0
    ok_checks: int = 0
    response_ms_sum: float = 0.0
    response_ms_count: int = 0
    response_ms_max: float | None = None

    def add(self, other: Tally) -> None:
        self.checks += other.checks
        self.ok_checks += other.ok_checks
        self.response_ms_sum += other.response_ms_sum
        self.response_ms_count += other.response_ms_count
        if other.response_ms_max is not None:
            self.response_ms_max = max(self.response_ms_max or 0.0, other.response_ms_max)

    @property
    def uptime(self) -> float | None:
        """Percentage of checks that passed, or None without checks."""
        return 100.0 * self.ok_checks / self.checks if self.checks else None

    @property
    def average_ms(self) -> float | None:
        return self.response_ms_sum / self.response_ms_count if self.response_ms_count else None


def hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def day_floor(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def epoch_seconds(column_sql: str) -> str:
    """SQL for a naive-UTC timestamp column as unix seconds, on this database."""
    if db.engine.dialect.name == "postgresql":
        return f"EXTRACT(EPOCH FROM {column_sql})"
    return f"CAST(strftime('%s', {column_sql}) AS INTEGER)"


def bucket_sql(column_sql: str, bucket_seconds: int) -> str:
    """SQL for the number of the ``bucket_seconds``-long bucket a timestamp falls in."""
    if db.engine.dialect.name == "postgresql":
        return f"FLOOR({epoch_seconds(column_sql)} / {int(bucket_seconds)})"
    return f"({epoch_seconds(column_sql)} / {int(bucket_seconds)})"  # integer division


def _per_endpoint_join() -> str:
    # SQLite otherwise walks the whole (endpoint_id, checked_at) index for a
    # time range; CROSS JOIN makes it seek the range once per endpoint
    # (20 ms instead of 270 ms for an hour of 1,000 endpoints).
    return "CROSS JOIN" if db.engine.dialect.name == "sqlite" else "JOIN"


def _raw_rows(start: datetime, end: datetime | None, *, bucket_seconds: int | None,
              endpoint_ids: list[int] | None, per_location: bool):
    """Rows of raw results in [start, end) aggregated per endpoint, time
    bucket and, with ``per_location``, instance (one query for all endpoints)."""
    bucket = bucket_sql("r.checked_at", bucket_seconds) if bucket_seconds else "0"
    where = ["r.checked_at >= :start"]
    params = {"start": start}
    if end is not None:
        where.append("r.checked_at < :end")
        params["end"] = end
    if endpoint_ids is not None:
        if not endpoint_ids:
            return []
        where.append("e.id IN :ids")
        params["ids"] = list(endpoint_ids)
    location = ", r.instance_id AS instance_id, MAX(r.location) AS location" if per_location else ""
    sql = text(
        f"SELECT e.id AS endpoint_id, {bucket} AS bucket{location}, COUNT(*) AS checks, "
        "SUM(CASE WHEN r.is_ok THEN 1 ELSE 0 END) AS ok_checks, "
        "COALESCE(SUM(r.response_time_ms), 0) AS ms_sum, COUNT(r.response_time_ms) AS ms_count, "
        "MAX(r.response_time_ms) AS ms_max "
        f"FROM endpoints e {_per_endpoint_join()} response_times r ON r.endpoint_id = e.id "
        # No "GROUP BY 0": PostgreSQL takes a number there for a column position.
        f"WHERE {' AND '.join(where)} GROUP BY e.id{', ' + bucket if bucket_seconds else ''}"
        f"{', r.instance_id' if per_location else ''}"
    ).bindparams(bindparam("start", type_=UTCDateTime()))
    if end is not None:
        sql = sql.bindparams(bindparam("end", type_=UTCDateTime()))
    if endpoint_ids is not None:
        sql = sql.bindparams(bindparam("ids", expanding=True))
    return db.session.execute(sql, params)


def _tally(row) -> Tally:
    return Tally(int(row.checks), int(row.ok_checks or 0), float(row.ms_sum or 0.0), int(row.ms_count or 0),
                 float(row.ms_max) if row.ms_max is not None else None)


def raw_tallies(start: datetime, end: datetime | None, *, bucket_seconds: int | None = None,
                endpoint_ids: list[int] | None = None) -> dict[tuple[int, int], Tally]:
    """Aggregate raw results in [start, end) per endpoint (and time bucket).

    Keys are (endpoint_id, bucket number) where bucket number is unix seconds
    // ``bucket_seconds`` (0 without buckets). One query for all endpoints.
    """
    return {(row.endpoint_id, int(row.bucket)): _tally(row)
            for row in _raw_rows(start, end, bucket_seconds=bucket_seconds, endpoint_ids=endpoint_ids,
                                 per_location=False)}


@dataclass(frozen=True)
class LocationKey:
    """Whose results a per-location tally counts: an endpoint, an instance
    and the location it reported, in one time bucket."""

    endpoint_id: int
    instance_id: str
    location: str
    bucket: int


def raw_location_tallies(start: datetime, end: datetime | None, *, bucket_seconds: int | None = None,
                         endpoint_ids: list[int] | None = None) -> dict[LocationKey, Tally]:
    """``raw_tallies`` per location (instance) as well: one query for all endpoints."""
    return {LocationKey(row.endpoint_id, row.instance_id, row.location, int(row.bucket)): _tally(row)
            for row in _raw_rows(start, end, bucket_seconds=bucket_seconds, endpoint_ids=endpoint_ids,
                                 per_location=True)}


# --- counting results as they are stored -----------------------------------------

_COUNTED = ("COUNT(*), SUM(CASE WHEN is_ok THEN 1 ELSE 0 END), COALESCE(SUM(response_time_ms), 0), "
            "COUNT(response_time_ms), MAX(response_time_ms)")


def count_results(added: int) -> None:
    """SQLite: add the ``added`` results the insert just before stored to
    their hour's and day's counts, per endpoint and location; the caller
    commits, with the insert.

    Those rows are the ``added`` greatest ids, and nothing else is: each
    new rowid is one above the greatest, and the insert's transaction holds
    the only write lock. Two statements, each an aggregate of those rows
    upserted into the counts in key order, all in the database.
    (PostgreSQL counts in the insert's own statement: ``counting``.)
    """
    if added <= 0:
        return
    last = db.session.execute(text("SELECT MAX(id) FROM response_times")).scalar_one()
    for statement in counting("response_times WHERE id > :after"):
        db.session.execute(text(statement), {"after": last - added})


def counting(source: str) -> list[str]:
    """The two statements that add the results ``source`` (SQL after
    FROM, with the columns of ``response_times``) to their hour's and day's
    counts: an aggregate per endpoint, location and hour (day), in key
    order, upserted as an addition to what is there."""
    statements = []
    for table, period in (("result_location_hours", "hour"), ("result_location_days", "day")):
        start = _period_start("checked_at", period)
        statements.append(
            f"INSERT INTO {table} (endpoint_id, {period}, instance_id, location, checks, ok_checks, "
            "response_ms_sum, response_ms_count, response_ms_max) "
            f"SELECT endpoint_id, {start}, instance_id, MAX(location), {_COUNTED} FROM {source} "
            f"GROUP BY endpoint_id, {start}, instance_id ORDER BY endpoint_id, {start}, instance_id "
            f"ON CONFLICT (endpoint_id, {period}, instance_id) DO UPDATE SET location = excluded.location, "
            f"checks = {table}.checks + excluded.checks, ok_checks = {table}.ok_checks + excluded.ok_checks, "
            f"response_ms_sum = {table}.response_ms_sum + excluded.response_ms_sum, "
            f"response_ms_count = {table}.response_ms_count + excluded.response_ms_count, "
            # The larger, or whichever is not NULL (both databases).
            f"response_ms_max = CASE WHEN excluded.response_ms_max > {table}.response_ms_max "
            f"THEN excluded.response_ms_max ELSE COALESCE({table}.response_ms_max, excluded.response_ms_max) END")
    return statements


def _period_start(column_sql: str, period: str) -> str:
    """SQL for the start of the hour or day of a timestamp column, as the
    column stores it (SQLite: SQLAlchemy's text, cut without rounding)."""
    if db.engine.dialect.name == "postgresql":
        return f"date_trunc('{period}', {column_sql})"
    if period == "hour":
        return f"substr({column_sql}, 1, 13) || ':00:00.000000'"
    return f"substr({column_sql}, 1, 10) || ' 00:00:00.000000'"


# --- reading ------------------------------------------------------------------------

def _ids_clause(statement: str, params: dict, endpoint_ids) -> tuple[str, bool]:
    if endpoint_ids is None:
        return statement, False
    params["ids"] = list(endpoint_ids)
    return statement + " AND endpoint_id IN :ids", True


def _counts(sql: str, params: dict, datetimes: list[str], expanding: bool):
    statement = text(sql).bindparams(*(bindparam(name, type_=UTCDateTime()) for name in datetimes))
    if expanding:
        statement = statement.bindparams(bindparam("ids", expanding=True))
    return db.session.execute(statement, params)


def _summed(checks, ok, ms_sum, ms_count, ms_max) -> Tally:
    return Tally(int(checks or 0), int(ok or 0), float(ms_sum or 0.0), int(ms_count or 0),
                 float(ms_max) if ms_max is not None else None)


_SUMS = "SUM(checks), SUM(ok_checks), SUM(response_ms_sum), SUM(response_ms_count), MAX(response_ms_max)"


def hourly_rows(start: datetime, now: datetime, *, endpoint_ids: list[int] | None = None):
    """(endpoint_id, hour number, Tally) from ``start`` (an hour) through
    the current hour, every location summed; one query for any number of
    endpoints.

    The hour number is unix seconds // 3600. Through the end of the current
    hour: a result stamped a little ahead (a dependent's clock) counts once
    its hour comes, not in one no reader expects yet.
    """
    if endpoint_ids is not None and not endpoint_ids:
        return
    params = {"start": start, "end": hour_floor(now) + HOUR}
    sql, expanding = _ids_clause(
        f"SELECT endpoint_id, {bucket_sql('hour', 3600)}, {_SUMS} FROM result_location_hours "
        "WHERE hour >= :start AND hour < :end", params, endpoint_ids)
    for endpoint_id, bucket, *numbers in _counts(sql + " GROUP BY endpoint_id, hour", params, ["start", "end"],
                                                expanding):
        yield endpoint_id, int(bucket), _summed(*numbers)


def hourly_tallies(start: datetime, now: datetime, *, endpoint_ids: list[int] | None = None
                   ) -> dict[int, dict[datetime, Tally]]:
    """Per endpoint, a ``Tally`` per hour from ``start`` (an hour) up to now."""
    out: dict[int, dict[datetime, Tally]] = {}
    for endpoint_id, bucket, tally in hourly_rows(start, now, endpoint_ids=endpoint_ids):
        out.setdefault(endpoint_id, {})[datetime.fromtimestamp(bucket * 3600, timezone.utc)] = tally
    return out


def daily_tallies(start: datetime, now: datetime, *, endpoint_ids: list[int]) -> dict[int, dict[date, Tally]]:
    """Per endpoint, a ``Tally`` per UTC day from ``start`` (a midnight)
    through today, every location summed: one query, a row per endpoint,
    location and day."""
    if not endpoint_ids:
        return {}
    params = {"start": start, "end": day_floor(now) + DAY}
    sql, expanding = _ids_clause(
        f"SELECT endpoint_id, {bucket_sql('day', 86400)}, {_SUMS} FROM result_location_days "
        "WHERE day >= :start AND day < :end", params, endpoint_ids)
    out: dict[int, dict[date, Tally]] = {}
    for endpoint_id, bucket, *numbers in _counts(sql + " GROUP BY endpoint_id, day", params, ["start", "end"],
                                                expanding):
        out.setdefault(endpoint_id, {})[datetime.fromtimestamp(int(bucket) * 86400, timezone.utc).date()] = \
            _summed(*numbers)
    return out


def location_rows(start: datetime, now: datetime, *, endpoint_ids: list[int], bucket_seconds: int = 3600):
    """(``LocationKey``, Tally) per endpoint, location and bucket of
    ``bucket_seconds`` (whole hours) from ``start`` (an hour) through the
    current hour: the hours' counts summed per bucket in SQL, one query."""
    if not endpoint_ids:
        return
    bucket = bucket_sql("hour", bucket_seconds)
    params = {"start": start, "end": hour_floor(now) + HOUR}
    sql, expanding = _ids_clause(
        f"SELECT endpoint_id, instance_id, MAX(location), {bucket}, {_SUMS} FROM result_location_hours "
        "WHERE hour >= :start AND hour < :end", params, endpoint_ids)
    for endpoint_id, instance_id, location, number, *numbers in _counts(
            sql + f" GROUP BY endpoint_id, instance_id, {bucket}", params, ["start", "end"], expanding):
        yield LocationKey(endpoint_id, instance_id, location, int(number)), _summed(*numbers)


def location_checks_since(endpoint_id: int, starts: dict[str, datetime], now: datetime
                          ) -> dict[str, tuple[str, dict[str, Tally]]]:
    """Per instance: the location it reported and, for each of ``starts``
    (name to an hour), its checks and successes from that hour up to now.

    For uptimes over several spans in one query: a row per location.
    """
    names = list(starts)
    columns = ", ".join(f"SUM(CASE WHEN hour >= :s{i} THEN checks ELSE 0 END), "
                        f"SUM(CASE WHEN hour >= :s{i} THEN ok_checks ELSE 0 END)" for i in range(len(names)))
    params = {"endpoint_id": endpoint_id, "start": min(starts.values()), "end": hour_floor(now) + HOUR,
              **{f"s{i}": starts[name] for i, name in enumerate(names)}}
    sql = (f"SELECT instance_id, MAX(location), {columns} FROM result_location_hours "
           "WHERE endpoint_id = :endpoint_id AND hour >= :start AND hour < :end GROUP BY instance_id")
    out: dict[str, tuple[str, dict[str, Tally]]] = {}
    datetimes = ["start", "end", *(f"s{i}" for i in range(len(names)))]
    for instance_id, location, *numbers in _counts(sql, params, datetimes, False):
        out[instance_id] = (location, {name: Tally(int(numbers[2 * i] or 0), int(numbers[2 * i + 1] or 0))
                                       for i, name in enumerate(names)})
    return out
