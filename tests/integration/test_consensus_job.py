"""The clock's consensus job: a pass, then a rest in proportion to how long it took."""
import redis as redis_client

from app.services.endpoints import create_endpoint


def test_it_rests_after_a_pass_in_proportion_to_its_length(app, redis_url, monkeypatch):
    from workers import jobs
    from workers.jobs import consensus as job

    monkeypatch.setattr(jobs, "_app", app)
    # A pass may take at most a ten-thousandth of a core: the rest after it
    # is 9,999 times its length, long enough to see whatever the machine's speed.
    monkeypatch.setattr(job, "MAX_CORE_SHARE", 0.0001)
    with app.app_context():
        create_endpoint({"name": "db", "checkType": "tcp", "target": "127.0.0.1", "port": 5432})
    first = job.reevaluate_consensus()
    assert first["endpoints"] == 1
    rest_ms = redis_client.Redis.from_url(redis_url).pttl(job.REST_KEY)
    assert rest_ms > 0
    assert rest_ms <= (first["seconds"] + 0.0005) * 9999 * 1000  # "seconds" is rounded to the millisecond
    assert job.reevaluate_consensus() == {"skipped": "resting after the last pass"}


def test_it_runs_a_pass_once_the_rest_is_over(app, redis_url, monkeypatch):
    from workers import jobs
    from workers.jobs import consensus as job

    monkeypatch.setattr(jobs, "_app", app)
    redis_client.Redis.from_url(redis_url).set(job.REST_KEY, "1", px=60_000)
    assert job.reevaluate_consensus() == {"skipped": "resting after the last pass"}
    redis_client.Redis.from_url(redis_url).delete(job.REST_KEY)
    assert "endpoints" in job.reevaluate_consensus()
