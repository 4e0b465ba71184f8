"""The states a page benchmark measures in, and how a benchmark gets there.

- ``never-rolled-up``: results stored, and no job of the clock has run on
  them since. Seeded in bulk (SQL or Core inserts, much faster than the
  storing path), results are then counted by ``count_seeded_results``: the
  statements migration 0012_counts counts raw results with, which give the
  rows ``results.store_results`` keeps as it stores them (the tests check
  that the two agree). This is also the state right after the upgrade to
  0012 with results that were never rolled up.
- ``rolled-up``: then the clock's ``prune-results`` job has run, the one
  periodic job left on results (``run_clock_job``: retention's prune and
  SQLite's checkpoint, timed and reported, not part of the page figures).

``--state both`` (the default) measures one seeding in the first state and
then in the second.
"""
from __future__ import annotations

import time

STATES = ("never-rolled-up", "rolled-up")
CHOICES = (*STATES, "both")


def wanted(state: str) -> list[str]:
    """The states a ``--state`` value asks for, in the order they are measured."""
    return list(STATES) if state == "both" else [state]


def count_seeded_results(app) -> dict:
    """Hourly and daily counts of every result in ``response_times``, as
    storing them one batch at a time would have kept them; returns rows
    made and seconds taken."""
    from app.extensions import db

    started = time.perf_counter()
    with app.app_context():
        postgresql = db.engine.dialect.name == "postgresql"

        def cut(column: str, unit: str) -> str:
            if postgresql:
                return f"date_trunc('{unit}', {column})"
            return f"strftime('{'%Y-%m-%d %H' if unit == 'hour' else '%Y-%m-%d 00'}:00:00.000000', {column})"

        counts = "checks, ok_checks, response_ms_sum, response_ms_count, response_ms_max"
        hour = cut("checked_at", "hour")
        db.session.execute(db.text(
            f"INSERT INTO result_location_hours (endpoint_id, hour, instance_id, location, {counts}) "
            f"SELECT endpoint_id, {hour}, instance_id, MAX(location), COUNT(*), "
            "SUM(CASE WHEN is_ok THEN 1 ELSE 0 END), COALESCE(SUM(response_time_ms), 0), COUNT(response_time_ms), "
            f"MAX(response_time_ms) FROM response_times GROUP BY endpoint_id, {hour}, instance_id"))
        day = cut("hour", "day")
        db.session.execute(db.text(
            f"INSERT INTO result_location_days (endpoint_id, day, instance_id, location, {counts}) "
            f"SELECT endpoint_id, {day}, instance_id, MAX(location), SUM(checks), SUM(ok_checks), "
            "SUM(response_ms_sum), SUM(response_ms_count), MAX(response_ms_max) FROM result_location_hours "
            f"GROUP BY endpoint_id, {day}, instance_id"))
        db.session.commit()
        rows = {table: db.session.execute(db.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
                for table in ("result_location_hours", "result_location_days")}
        if postgresql:
            db.session.execute(db.text("ANALYZE"))
            db.session.commit()
        db.session.remove()
    return {**rows, "seconds": round(time.perf_counter() - started, 1)}


def run_clock_job(app) -> dict:
    """What the clock's ``prune-results`` job does, in process: rows pruned,
    the checkpoint (SQLite) and seconds taken."""
    from app.extensions import db
    from app.services import retention

    started = time.perf_counter()
    with app.app_context():
        pruned = retention.prune()
        checkpoint = retention.checkpoint()
        if db.engine.dialect.name == "postgresql":
            db.session.execute(db.text("ANALYZE"))
            db.session.commit()
        db.session.remove()
    return {"pruned": pruned.rows, "finished": pruned.finished, "checkpoint": checkpoint,
            "seconds": round(time.perf_counter() - started, 1)}
