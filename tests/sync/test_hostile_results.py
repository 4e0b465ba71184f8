"""What dependents report cannot break the primary's pages: results stamped
ahead of the primary's clock, and certificate facts of any shape."""
from datetime import timedelta

from app.checks import CheckResult
from app.extensions import db
from app.models import utcnow
from app.services import configuration
from app.services.endpoints import create_endpoint
from app.services.results import record_results
from tests.ui.conftest import sign_in


def _web(app):
    from app.services.accounts import create_user

    with app.app_context():
        create_user("admin@example.org", "correct horse battery", is_admin=True)
    client = app.test_client()
    assert sign_in(client).status_code == 302
    return client


def test_results_stamped_in_a_later_hour_do_not_break_the_dashboard_or_detail_page(app):
    with app.app_context():
        endpoint_id = create_endpoint({"name": "shop", "checkType": "tcp", "target": "127.0.0.1", "port": 1}).id
        ahead = utcnow() + timedelta(minutes=61)  # always in the next hour: a dependent's fast clock
        record_results([(endpoint_id, CheckResult(is_ok=True, check_type="tcp", response_time_ms=5.0,
                                                  checked_at=ahead))],
                       instance_id="fast-clock", location="elsewhere")
        db.session.remove()
    web = _web(app)
    assert web.get("/").status_code == 200
    for range_key in ("1h", "24h", "7d"):
        assert web.get(f"/endpoints/{endpoint_id}?range={range_key}").status_code == 200


def test_certificate_facts_come_from_this_instance_s_own_results(app):
    with app.app_context():
        endpoint_id = create_endpoint({"name": "site", "checkType": "http", "target": "https://127.0.0.1:9/"}).id
        own = {"certificateInfo": {"subject": "CN=own.test", "daysRemaining": 40}}
        record_results([(endpoint_id, CheckResult(is_ok=True, check_type="http", response_time_ms=5.0,
                                                  checked_at=utcnow() - timedelta(minutes=1), metadata=own))],
                       instance_id=configuration.instance_id(), location="here")
        hostile = {"certificateInfo": {"subject": "CN=forged.test", "daysRemaining": "lots"}}
        record_results([(endpoint_id, CheckResult(is_ok=True, check_type="http", response_time_ms=5.0,
                                                  metadata=hostile))], instance_id="other", location="there")
        db.session.remove()
    web = _web(app)
    page = web.get(f"/endpoints/{endpoint_id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "CN=own.test" in html and "40 days left" in html and "forged" not in html


def test_a_certificate_with_a_malformed_day_count_is_shown_without_it(app):
    with app.app_context():
        endpoint_id = create_endpoint({"name": "site", "checkType": "http", "target": "https://127.0.0.1:9/"}).id
        odd = {"certificateInfo": {"subject": "CN=odd.test", "daysRemaining": "lots"}}
        record_results([(endpoint_id, CheckResult(is_ok=True, check_type="http", response_time_ms=5.0,
                                                  metadata=odd))],
                       instance_id=configuration.instance_id(), location="here")
        db.session.remove()
    html = _web(app).get(f"/endpoints/{endpoint_id}").get_data(as_text=True)
    assert "CN=odd.test" in html and "days left" not in html


def test_a_search_cannot_spell_out_credentials_in_a_target(app):
    from app.services.dashboard import endpoint_rows
    from app.services.endpoints import list_endpoints

    with app.app_context():
        create_endpoint({"name": "shop", "checkType": "http", "target": "https://ops:hunter2@shop.test/"})
        create_endpoint({"name": "blog_100%", "checkType": "http", "target": "https://blog.test/"})
        for search in ("hunter2", "ops:h", "@shop"):
            assert endpoint_rows(search=search) == [] and list_endpoints(search=search) == [], search
        assert [r.name for r in endpoint_rows(search="sho")] == ["shop"]  # by name it is found
        assert [e.name for e in list_endpoints(search="blog.test")] == ["blog_100%"]
        assert [e.name for e in list_endpoints(search="_100%")] == ["blog_100%"]
        assert list_endpoints(search="b_og") == []  # _ is a character, not a wildcard
