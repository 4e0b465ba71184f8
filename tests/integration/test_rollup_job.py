"""The clock's roll-up job turns finished hours of results into hourly rows."""
from datetime import timedelta

from sqlalchemy import select

from app.checks import CheckResult
from app.extensions import db
from app.models import ResultHour, utcnow
from app.services.endpoints import create_endpoint
from app.services.results import record_results


def test_it_rolls_up_finished_hours_once(app, monkeypatch):
    from workers import jobs
    from workers.jobs.checks import roll_up_results

    monkeypatch.setattr(jobs, "_app", app)
    three_hours_ago = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    with app.app_context():
        endpoint = create_endpoint({"name": "db", "checkType": "tcp", "target": "127.0.0.1", "port": 5432})
        record_results([
            (endpoint.id, CheckResult(is_ok=True, check_type="tcp", response_time_ms=10.0,
                                      checked_at=three_hours_ago + timedelta(minutes=5))),
            (endpoint.id, CheckResult(is_ok=False, check_type="tcp", failure_reason="refused",
                                      checked_at=three_hours_ago + timedelta(minutes=35))),
        ], instance_id="local", location="here")
    roll_up_results()
    roll_up_results()  # a second run adds nothing
    with app.app_context():
        hours = db.session.execute(select(ResultHour)).scalars().all()
        assert [(h.checks, h.ok_checks) for h in hours] == [(2, 1)]
        assert hours[0].hour == three_hours_ago


def test_it_catches_up_on_a_long_pause_in_one_run_of_short_steps(app, monkeypatch):
    from workers import jobs
    from workers.jobs.checks import roll_up_results

    from app.services.rollups import MAX_HOURS_PER_CALL

    monkeypatch.setattr(jobs, "_app", app)
    this_hour = utcnow().replace(minute=0, second=0, microsecond=0)
    hours = [this_hour - timedelta(hours=h) for h in range(2, 4 * MAX_HOURS_PER_CALL + 2)]
    with app.app_context():
        endpoint = create_endpoint({"name": "db", "checkType": "tcp", "target": "127.0.0.1", "port": 5432})
        record_results([(endpoint.id, CheckResult(is_ok=True, check_type="tcp", response_time_ms=1.0,
                                                  checked_at=hour + timedelta(minutes=30)))
                        for hour in hours], instance_id="local", location="here")
    roll_up_results()
    with app.app_context():
        rolled = {h.hour for h in db.session.execute(select(ResultHour)).scalars()}
        assert rolled == set(hours)
