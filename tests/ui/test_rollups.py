"""Hourly roll-ups: each finished hour once, and readers get the same
numbers from roll-ups plus the raw tail as from raw results alone."""
from datetime import datetime, timedelta, timezone

from app.extensions import db
from app.models import ResultHour, RolledUpHour
from app.services import rollups
from tests.ui.conftest import add_result, make_endpoint

NOW = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)


def _seed(app):
    first, second = make_endpoint(app, name="a"), make_endpoint(app, name="b")
    for minutes in range(0, 300, 10):  # 5 hours, every 10 minutes
        at = NOW - timedelta(minutes=minutes)
        add_result(app, first, ms=10.0 + minutes, at=at)
        add_result(app, second, ok=minutes % 20 == 0, ms=5.0, at=at, reason="down")
    return first, second


def test_it_rolls_up_finished_hours_once(app):
    first, second = _seed(app)
    with app.app_context():
        mark = rollups.roll_up(NOW)
        assert mark == datetime(2026, 3, 1, 12, tzinfo=timezone.utc)  # 11:00-12:00 is over
        hours = db.session.execute(db.select(ResultHour).where(ResultHour.endpoint_id == first)).scalars().all()
        assert [h.checks for h in sorted(hours, key=lambda h: h.hour)] == [2, 6, 6, 6, 6]
        assert rollups.roll_up(NOW) == mark  # nothing left to do
        assert db.session.execute(db.select(db.func.count()).select_from(RolledUpHour)).scalar_one() == 5
        # An hour that ended less than ROLLUP_DELAY ago waits for late results.
        assert rollups.roll_up(datetime(2026, 3, 1, 13, 5, tzinfo=timezone.utc)) == mark


def test_roll_ups_plus_raw_results_equal_raw_results(app):
    first, second = _seed(app)
    with app.app_context():
        start = rollups.hour_floor(NOW - timedelta(hours=6))
        raw = rollups.raw_tallies(start, None, bucket_seconds=3600)
        combined = rollups.hourly_tallies(start, NOW)
        for endpoint_id in (first, second):
            for hour, tally in combined[endpoint_id].items():
                expected = raw[(endpoint_id, int(hour.timestamp()) // 3600)]
                assert (tally.checks, tally.ok_checks, round(tally.response_ms_sum, 6)) == \
                       (expected.checks, expected.ok_checks, round(expected.response_ms_sum, 6))
        total = rollups.Tally()
        for tally in combined[second].values():
            total.add(tally)
        assert total.checks == 30 and total.ok_checks == 15 and total.uptime == 50.0


def test_it_works_on_postgresql_too(pg_app):
    from app.services.endpoints import create_endpoint
    from app.checks import CheckResult
    from app.services.results import record_results
    from app.services import history

    with pg_app.app_context():
        endpoint = create_endpoint({"name": "pg", "checkType": "http", "target": "https://pg.test/"})
        results = []
        for minutes in range(0, 180, 15):
            result = CheckResult(is_ok=minutes != 30, check_type="http", response_time_ms=20.0,
                                 metadata={"certificateInfo": {"daysRemaining": 40}})
            result.checked_at = NOW - timedelta(minutes=minutes)
            results.append((endpoint.id, result))
        record_results(results, instance_id="pg", location="lab")
        assert history.uptimes(endpoint.id, NOW)["7d"] == 100.0 * 11 / 12
        assert sum(b.tally.checks for b in history.chart(endpoint.id, "24h", NOW)) == 12
        assert sum(b.tally.checks for b in history.chart(endpoint.id, "7d", NOW)) == 12
