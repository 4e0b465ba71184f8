"""Hourly and daily counts: kept as results are stored, they give readers
the same numbers as raw results, with no job run first."""
from datetime import datetime, timedelta, timezone

from app.extensions import db
from app.models import ResultLocationDay, ResultLocationHour
from app.services import rollups
from tests.ui.conftest import add_result, make_endpoint

NOW = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)


def _seed(app):
    first, second = make_endpoint(app, name="a"), make_endpoint(app, name="b")
    for minutes in range(0, 900, 10):  # 15 hours, every 10 minutes, across midnight
        at = NOW - timedelta(minutes=minutes)
        add_result(app, first, ms=10.0 + minutes, at=at)
        add_result(app, second, ok=minutes % 20 == 0, ms=5.0, at=at, reason="down")
    return first, second


def test_it_counts_each_hour_and_day_as_results_are_stored(app):
    first, _ = _seed(app)
    with app.app_context():
        hours = db.session.execute(db.select(ResultLocationHour).where(ResultLocationHour.endpoint_id == first)
                                   .order_by(ResultLocationHour.hour)).scalars().all()
        # From 21:40 the day before to 12:30, the current hour included.
        assert [h.checks for h in hours] == [2] + [6] * 14 + [4]
        assert hours[-1].hour == NOW.replace(minute=0)
        assert hours[-1].response_ms_max == 10.0 + 30 and hours[-1].response_ms_count == 4
        days = db.session.execute(db.select(ResultLocationDay).where(ResultLocationDay.endpoint_id == first)
                                  .order_by(ResultLocationDay.day)).scalars().all()
        assert [(d.day.day, d.checks) for d in days] == [(28, 14), (1, 76)]


def test_counts_equal_raw_results(app):
    first, second = _seed(app)
    with app.app_context():
        start = rollups.hour_floor(NOW - timedelta(hours=16))
        raw = rollups.raw_tallies(start, None, bucket_seconds=3600)
        counted = rollups.hourly_tallies(start, NOW)
        for endpoint_id in (first, second):
            assert len(counted[endpoint_id]) == 16
            for hour, tally in counted[endpoint_id].items():
                expected = raw[(endpoint_id, int(hour.timestamp()) // 3600)]
                assert (tally.checks, tally.ok_checks, round(tally.response_ms_sum, 6), tally.response_ms_max) == \
                       (expected.checks, expected.ok_checks, round(expected.response_ms_sum, 6),
                        expected.response_ms_max)
        days = rollups.daily_tallies(rollups.day_floor(NOW - timedelta(days=1)), NOW, endpoint_ids=[second])
        total = rollups.Tally()
        for tally in days[second].values():
            total.add(tally)
        assert total.checks == 90 and total.ok_checks == 45 and total.uptime == 50.0


def test_it_works_on_postgresql_too(pg_app):
    from app.checks import CheckResult
    from app.services import history
    from app.services.endpoints import create_endpoint
    from app.services.results import record_results

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
        days = rollups.daily_tallies(rollups.day_floor(NOW), NOW, endpoint_ids=[endpoint.id])
        assert days[endpoint.id][NOW.date()].checks == 12
