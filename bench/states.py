"""The states a page benchmark measures in, and how a benchmark gets there.

- ``never-rolled-up``: results stored, and no job of the clock has run on
  them since. Seeded in bulk (SQL or Core inserts, much faster than the
  storing path), results are then counted by ``count_seeded_results``:
  the statements ``results.store_results`` counts each batch with, over
  every seeded result at once, which gives the rows storing them batch by
  batch keeps (the tests check counts against raw results). This is also
  the state right after the upgrade to 0012_counts with results that were
  never rolled up (the migration counts them the same way).
- ``rolled-up``: then the clock's ``prune-results`` job has run, the one
  periodic job left on results (``run_clock_job``: retention's prune and
  SQLite's checkpoint, timed and reported, not part of the page figures).

``--state both`` (the default) measures one seeding in the first state and
then in the second.
"""
from __future__ import annotations

import time

from bench.scratch import analyze_after_seeding

STATES = ("never-rolled-up", "rolled-up")
CHOICES = (*STATES, "both")


def wanted(state: str) -> list[str]:
    """The states a ``--state`` value asks for, in the order they are measured."""
    return list(STATES) if state == "both" else [state]


def count_seeded_results(app) -> dict:
    """Hourly and daily counts of every result in ``response_times``, by
    the statements ``results.store_results`` counts each batch with
    (``rollups.counting``), over all of them at once; returns rows made and
    seconds taken."""
    from app.extensions import db
    from app.services.rollups import counting

    started = time.perf_counter()
    with app.app_context():
        for statement in counting("response_times"):
            db.session.execute(db.text(statement))
        db.session.commit()
        rows = {table: db.session.execute(db.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
                for table in ("result_location_hours", "result_location_days")}
        analyze_after_seeding(db)
        db.session.remove()
    return {**rows, "seconds": round(time.perf_counter() - started, 1)}


def run_clock_job(app) -> dict:
    """What the clock's ``prune-results`` job does, in process, run again
    until it has caught up (a run stops after ``retention.MAX_SECONDS``):
    rows pruned, runs, the checkpoint (SQLite) and seconds taken."""
    from app.extensions import db
    from app.services import retention

    started = time.perf_counter()
    rows: dict[str, int] = {}
    runs = 0
    with app.app_context():
        while True:
            runs += 1
            pruned = retention.prune()
            for kind, count in pruned.rows.items():
                rows[kind] = rows.get(kind, 0) + count
            if pruned.finished:
                break
        checkpoint = retention.checkpoint()
        analyze_after_seeding(db)
        db.session.remove()
    seconds = time.perf_counter() - started
    return {"pruned": rows, "runs": runs, "checkpoint": checkpoint, "seconds": round(seconds, 1),
            "rows_per_second": round(sum(rows.values()) / seconds) if rows else 0}
