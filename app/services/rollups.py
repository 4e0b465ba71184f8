"""Hourly roll-ups of results, and reading results over a time range.

Reading a day of raw results for 1,000 endpoints means aggregating 1.4
million rows; reading 24 hourly rows per endpoint plus the last hour of raw
results is a few milliseconds. So finished hours are rolled up into
``result_hours`` once, by the clock's ``roll-up-results`` job (``roll_up``,
every 5 minutes; readers never roll up), and per location into
``result_location_hours`` in the same pass (for the endpoint page; kept
``KEEP_LOCATION_ROLLUPS``), and readers combine:

    rolled-up hours before the watermark  +  raw results from it on

An hour is rolled up ``ROLLUP_DELAY`` after it ends, so results that arrive
a little late (a batch that ran long, a heartbeat retried) count at once.
Results that arrive later than that (a dependent's outbox after an outage:
results keep the time they were checked) mark their endpoint's hour in
``stale_hours`` as they are stored (``noting_late_hours``), and the next
roll-up computes those hours again from raw results. Storing results and
rolling up are serialized (``_lock_out_ingest``), so a result stored while
its hour is being rolled up is either seen by the roll-up or marked, never
neither. Hours whose raw results are already past retention are not
recomputed: a result that arrives that late is not counted.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from flask import current_app
from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.extensions import db
from app.models import ResultHour, ResultLocationHour, RolledUpHour, StaleHour, UTCDateTime, utcnow

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
ROLLUP_DELAY = timedelta(minutes=10)
# Bounds the work of one call, and so how long storing results waits for it
# (a roll-up holds storing off); the job calls again until it has caught up.
MAX_HOURS_PER_CALL = 6
# Long enough for the public status page's 90 days.
KEEP_ROLLUPS = timedelta(days=100)
# Per location: long enough for the endpoint page's 30 days.
KEEP_LOCATION_ROLLUPS = timedelta(days=31)
# Bounds the late hours one call recomputes (a day's outbox from 1,000
# endpoints is 24,000), for the same reason; the rest wait for the next call.
MAX_STALE_HOURS_PER_CALL = 1_000
# PostgreSQL advisory lock that serializes storing results and rolling up.
INGEST_LOCK_KEY = 0x726F6C6C7570  # "rollup"


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


def watermark() -> datetime | None:
    """Hours before this are rolled up; None before the first roll-up."""
    last = db.session.execute(select(func.max(RolledUpHour.hour))).scalar_one_or_none()
    return last + HOUR if last is not None else None


def _earliest_result() -> datetime | None:
    # min per endpoint through the index, then the min of those: no full scan.
    sql = text(
        "SELECT MIN((SELECT MIN(r.checked_at) FROM response_times r WHERE r.endpoint_id = e.id)) "
        "AS first FROM endpoints e"
    ).columns(first=UTCDateTime())
    return db.session.execute(sql).scalar_one_or_none()


def _lock_out_ingest(*, shared: bool) -> None:
    """Until this transaction ends, let results be stored or roll-ups run, not both.

    Storing results holds it shared, from before its insert until its
    commit; a roll-up holds it alone, from before it reads raw results
    until its commit. So a roll-up either sees a concurrent insert's rows or
    commits its watermark before that insert reads it (and marks what it
    stored late). PostgreSQL: a transaction-scoped advisory lock, and the
    default READ COMMITTED, where each statement after the lock sees what
    committed before it. SQLite has one writer at a time: the insert itself
    holds the write lock, and a roll-up takes it with a write that changes
    nothing.
    """
    if db.engine.dialect.name == "postgresql":
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        db.session.execute(text(f"SELECT {function}(:key)"), {"key": INGEST_LOCK_KEY})
    elif not shared:
        db.session.execute(text("DELETE FROM stale_hours WHERE 0 = 1"))


@contextmanager
def noting_late_hours(rows: list[dict]) -> Iterator[None]:
    """Around the insert of result ``rows``: afterwards, mark the hours of
    any that were already rolled up, so the next roll-up recomputes them.

    One watermark lookup and one comparison per batch; results on time
    (newer than the watermark) write nothing more. The caller commits.
    """
    if not rows:
        yield
        return
    _lock_out_ingest(shared=True)
    yield
    mark = watermark()
    if mark is None or min(row["checked_at"] for row in rows) >= mark:
        return
    # Sorted, so concurrent batches marking the same hours take them in one order.
    late = sorted({(row["endpoint_id"], hour_floor(row["checked_at"].astimezone(timezone.utc)))
                   for row in rows if row["checked_at"] < mark})
    insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    db.session.execute(insert(StaleHour).on_conflict_do_nothing(),
                       [{"endpoint_id": endpoint_id, "hour": hour} for endpoint_id, hour in late])
    logger.info("%d endpoint-hours gained late results and will be rolled up again (endpoints %s)",
                len(late), ", ".join(str(e) for e in sorted({e for e, _ in late})[:10]))


def _hours_to_roll_up(now: datetime, mark: datetime | None) -> tuple[datetime, datetime] | None:
    """The finished hours [start, end) from the watermark ``mark`` on, at
    most ``MAX_HOURS_PER_CALL`` of them; None when there are none."""
    limit = hour_floor(now - ROLLUP_DELAY)  # hours before this are finished
    start = mark
    if start is None:
        first = _earliest_result()
        if first is None:
            return None
        start = max(hour_floor(first), hour_floor(now - KEEP_ROLLUPS))
    if start >= limit:
        return None
    return start, min(limit, start + MAX_HOURS_PER_CALL * HOUR)


def late_hours_waiting(mark: datetime | None = None) -> bool:
    """Whether some rolled-up hour has results it does not count yet."""
    mark = mark if mark is not None else watermark()
    if mark is None:
        return False
    return db.session.execute(select(StaleHour.hour).where(StaleHour.hour < mark).limit(1)).first() is not None


def _roll_up_hours(start: datetime, end: datetime, now: datetime) -> None:
    # One pass over the raw results gives both tables: the totals are the
    # per-location tallies summed.
    by_location = raw_location_tallies(start, end, bucket_seconds=3600)
    rows, location_rows = _hour_rows(by_location, since=hour_floor(now - KEEP_LOCATION_ROLLUPS))
    hours = []
    hour = start
    while hour < end:
        hours.append({"hour": hour, "rolled_up_at": now})
        hour += HOUR
    insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    if rows:
        db.session.execute(insert(ResultHour).on_conflict_do_nothing(), rows)
    if location_rows:
        db.session.execute(insert(ResultLocationHour).on_conflict_do_nothing(), location_rows)
    db.session.execute(insert(RolledUpHour).on_conflict_do_nothing(), hours)
    logger.debug("rolled up %d hours from %s: %d endpoint-hours", len(hours), start, len(rows))


def _hour_rows(by_location: dict[LocationKey, Tally], *, since: datetime) -> tuple[list[dict], list[dict]]:
    """``result_hours`` rows and ``result_location_hours`` rows (for hours
    from ``since`` on) of hourly per-location tallies."""
    totals: dict[tuple[int, int], Tally] = {}
    location_rows = []
    for key, tally in by_location.items():
        totals.setdefault((key.endpoint_id, key.bucket), Tally()).add(tally)
        hour = datetime.fromtimestamp(key.bucket * 3600, timezone.utc)
        if hour >= since:
            location_rows.append({"instance_id": key.instance_id, "location": key.location,
                                  **_tally_columns(key.endpoint_id, hour, tally)})
    rows = [_tally_columns(endpoint_id, datetime.fromtimestamp(bucket * 3600, timezone.utc), tally)
            for (endpoint_id, bucket), tally in totals.items()]
    return rows, location_rows


def _tally_columns(endpoint_id: int, hour: datetime, t: Tally) -> dict:
    return {"endpoint_id": endpoint_id, "hour": hour, "checks": t.checks, "ok_checks": t.ok_checks,
            "response_ms_sum": t.response_ms_sum, "response_ms_count": t.response_ms_count,
            "response_ms_max": t.response_ms_max}


def _roll_up_late_hours(mark: datetime, now: datetime) -> None:
    """Recompute marked hours before ``mark`` from raw results and clear
    their marks.

    Runs under ``_lock_out_ingest``: no mark can be added while it runs, so
    clearing the marks it read clears nothing it has not handled.
    """
    marks = db.session.execute(
        select(StaleHour.endpoint_id, StaleHour.hour).where(StaleHour.hour < mark)
        .order_by(StaleHour.hour, StaleHour.endpoint_id).limit(MAX_STALE_HOURS_PER_CALL)
    ).all()
    if not marks:
        return
    # Raw results are pruned after the retention period (the hour the prune
    # is cutting into, and the next in case it runs meanwhile, are partial):
    # recomputing such an hour would lose the results it counted.
    retention = timedelta(days=current_app.config["SETTINGS"].result_retention_days)
    oldest = max(hour_floor(now - retention) + 2 * HOUR, hour_floor(now - KEEP_ROLLUPS))
    by_hour: dict[datetime, list[int]] = {}
    for endpoint_id, hour in marks:
        if hour >= oldest:
            by_hour.setdefault(hour, []).append(endpoint_id)
    rows, location_rows = [], []
    since = hour_floor(now - KEEP_LOCATION_ROLLUPS)
    for hour, endpoint_ids in by_hour.items():
        totals, per_location = _hour_rows(
            raw_location_tallies(hour, hour + HOUR, bucket_seconds=3600, endpoint_ids=endpoint_ids), since=since)
        rows += totals
        location_rows += per_location
    recomputed = [{"e": endpoint_id, "h": hour} for hour, ids in by_hour.items() for endpoint_id in ids]
    if recomputed:
        for table in (ResultHour.__table__, ResultLocationHour.__table__):
            db.session.execute(table.delete().where(table.c.endpoint_id == bindparam("e"),
                                                    table.c.hour == bindparam("h")), recomputed)
    if rows:
        db.session.execute(ResultHour.__table__.insert(), rows)
    if location_rows:
        db.session.execute(ResultLocationHour.__table__.insert(), location_rows)
    stale = StaleHour.__table__
    db.session.execute(stale.delete().where(stale.c.endpoint_id == bindparam("e"), stale.c.hour == bindparam("h")),
                       [{"e": endpoint_id, "h": hour} for endpoint_id, hour in marks])
    logger.info("rolled up %d endpoint-hours again for late results (%d too old to recompute)",
                len(recomputed), len(marks) - len(recomputed))


def roll_up(now: datetime | None = None) -> datetime:
    """Roll up finished hours not rolled up yet, and again the hours that
    gained late results; return the watermark.

    Safe to run from several processes at once: they take turns
    (``_lock_out_ingest``), and the second finds the work done.
    """
    now = now or utcnow()
    mark = watermark()
    if _hours_to_roll_up(now, mark) is None and not late_hours_waiting(mark):
        # What readers usually find: nothing to do, and nothing locked.
        return mark if mark is not None else hour_floor(now - ROLLUP_DELAY)
    _lock_out_ingest(shared=False)
    # Again under the lock: another process may have done it meanwhile.
    span = _hours_to_roll_up(now, watermark())
    if span is not None:
        _roll_up_hours(*span, now)
    mark = watermark()
    if mark is not None:
        _roll_up_late_hours(mark, now)
    cutoff = hour_floor(now - KEEP_ROLLUPS)
    db.session.execute(delete(ResultHour).where(ResultHour.hour < cutoff))
    db.session.execute(delete(RolledUpHour).where(RolledUpHour.hour < cutoff))
    db.session.execute(delete(ResultLocationHour).where(
        ResultLocationHour.hour < hour_floor(now - KEEP_LOCATION_ROLLUPS)))
    db.session.commit()
    return mark if mark is not None else hour_floor(now - ROLLUP_DELAY)


def hourly_rows(start: datetime, now: datetime, *, endpoint_ids: list[int] | None = None):
    """(endpoint_id, hour number, Tally) from ``start`` (an hour) up to now.

    The hour number is unix seconds // 3600. Rolled-up hours come from
    ``result_hours``, the rest from raw results: two queries for any number
    of endpoints.
    """
    if endpoint_ids is not None and not endpoint_ids:
        return
    # Readers never roll up (that is the clock's roll-up-results job, which
    # holds storing results off while it runs): what is past the watermark
    # comes from raw results, so the answer is the same either way.
    mark = watermark() or start
    if mark > start:
        # Plain rows with the hour as a number, not ORM objects with
        # datetimes: a 1,000-endpoint day is 24,000 of them.
        sql = (f"SELECT endpoint_id, {bucket_sql('hour', 3600)} AS bucket, checks, ok_checks, response_ms_sum, "
               "response_ms_count, response_ms_max FROM result_hours WHERE hour >= :start AND hour < :mark")
        params = {"start": start, "mark": mark}
        if endpoint_ids is not None:
            sql += " AND endpoint_id IN :ids"
            params["ids"] = list(endpoint_ids)
        statement = text(sql).bindparams(bindparam("start", type_=UTCDateTime()),
                                         bindparam("mark", type_=UTCDateTime()))
        if endpoint_ids is not None:
            statement = statement.bindparams(bindparam("ids", expanding=True))
        for endpoint_id, bucket, *numbers in db.session.execute(statement, params):
            yield endpoint_id, int(bucket), Tally(*numbers)
    # Up to the end of the current hour: a result stamped a little ahead (a
    # dependent's clock) counts once its hour comes, not in one no reader
    # expects yet.
    for (endpoint_id, bucket), tally in raw_tallies(max(start, mark), hour_floor(now) + HOUR, bucket_seconds=3600,
                                                    endpoint_ids=endpoint_ids).items():
        yield endpoint_id, bucket, tally


def hourly_tallies(start: datetime, now: datetime, *, endpoint_ids: list[int] | None = None
                   ) -> dict[int, dict[datetime, Tally]]:
    """Per endpoint, a ``Tally`` per hour from ``start`` (an hour) up to now."""
    out: dict[int, dict[datetime, Tally]] = {}
    for endpoint_id, bucket, tally in hourly_rows(start, now, endpoint_ids=endpoint_ids):
        hour = datetime.fromtimestamp(bucket * 3600, timezone.utc)
        out.setdefault(endpoint_id, {}).setdefault(hour, Tally()).add(tally)
    return out


def location_rows(start: datetime, now: datetime, *, endpoint_ids: list[int], bucket_seconds: int = 3600):
    """(``LocationKey``, Tally) per endpoint, location and bucket of
    ``bucket_seconds`` (whole hours) from ``start`` (an hour, at most
    ``KEEP_LOCATION_ROLLUPS`` ago) up to now.

    As ``hourly_rows``, per location: rolled-up hours from
    ``result_location_hours``, summed per bucket in SQL, the rest from raw
    results; two queries. A bucket the watermark cuts in two comes twice
    (add them up).
    """
    if not endpoint_ids:
        return
    mark = watermark() or start
    if mark > start:
        bucket = bucket_sql("hour", bucket_seconds)
        statement = text(
            f"SELECT endpoint_id, instance_id, MAX(location) AS location, {bucket} AS bucket, SUM(checks), "
            "SUM(ok_checks), SUM(response_ms_sum), SUM(response_ms_count), MAX(response_ms_max) "
            "FROM result_location_hours WHERE endpoint_id IN :ids AND hour >= :start AND hour < :mark "
            f"GROUP BY endpoint_id, instance_id, {bucket}"
        ).bindparams(bindparam("start", type_=UTCDateTime()), bindparam("mark", type_=UTCDateTime()),
                     bindparam("ids", expanding=True))
        for endpoint_id, instance_id, location, number, checks, ok, ms_sum, ms_count, ms_max in db.session.execute(
                statement, {"start": start, "mark": mark, "ids": list(endpoint_ids)}):
            yield (LocationKey(endpoint_id, instance_id, location, int(number)),
                   Tally(int(checks), int(ok), float(ms_sum or 0.0), int(ms_count or 0),
                         float(ms_max) if ms_max is not None else None))
    yield from raw_location_tallies(max(start, mark), hour_floor(now) + HOUR, bucket_seconds=bucket_seconds,
                                    endpoint_ids=endpoint_ids).items()


def location_checks_since(endpoint_id: int, starts: dict[str, datetime], now: datetime
                          ) -> dict[str, tuple[str, dict[str, Tally]]]:
    """Per instance: the location it reported and, for each of ``starts``
    (name to an hour), its checks and successes from that hour up to now.

    For uptimes over several spans in one pass: rolled-up hours summed in
    SQL (a row per location), the rest from raw results.
    """
    first = min(starts.values())
    mark = watermark() or first
    out: dict[str, tuple[str, dict[str, Tally]]] = {}

    def add(instance_id: str, location: str, name: str, tally: Tally) -> None:
        out.setdefault(instance_id, (location, {n: Tally() for n in starts}))[1][name].add(tally)

    if mark > first:
        names = list(starts)
        columns = ", ".join(f"SUM(CASE WHEN hour >= :s{i} THEN checks ELSE 0 END), "
                            f"SUM(CASE WHEN hour >= :s{i} THEN ok_checks ELSE 0 END)" for i in range(len(names)))
        statement = text(
            f"SELECT instance_id, MAX(location), {columns} FROM result_location_hours "
            "WHERE endpoint_id = :endpoint_id AND hour >= :start AND hour < :mark GROUP BY instance_id"
        ).bindparams(*(bindparam(key, type_=UTCDateTime()) for key in
                       ["start", "mark", *(f"s{i}" for i in range(len(names)))]))
        params = {"endpoint_id": endpoint_id, "start": first, "mark": mark,
                  **{f"s{i}": starts[name] for i, name in enumerate(names)}}
        for instance_id, location, *numbers in db.session.execute(statement, params):
            for i, name in enumerate(names):
                add(instance_id, location, name, Tally(int(numbers[2 * i] or 0), int(numbers[2 * i + 1] or 0)))
    for key, tally in raw_location_tallies(max(first, mark), hour_floor(now) + HOUR, bucket_seconds=3600,
                                           endpoint_ids=[endpoint_id]).items():
        hour = datetime.fromtimestamp(key.bucket * 3600, timezone.utc)
        for name, since in starts.items():
            if hour >= since:
                add(key.instance_id, key.location, name, tally)
    return out
