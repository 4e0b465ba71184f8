"""The instances page: the cluster's registry on a primary (live rows, removal
that revokes the token), a dependent's link to its primary, and standalone."""
import re

import pytest

from app.extensions import db
from app.models import MonitoringInstance
from app.services import configuration
from app.services.sync import dependent
from tests.conftest import SECRET, instance_app, make_app
from tests.sync.test_sync_api import DEPENDENT_ID, bearer, heartbeat, registration
from tests.ui.conftest import EMAIL, PASSWORD, csrf_token, post, sign_in

PRIMARY_ENV = {"ENABLE_SYNC_API": "true", "SYNC_SHARED_SECRET": SECRET, "INSTANCE_NAME": "fra-1",
               "INSTANCE_LOCATION": "frankfurt"}


@pytest.fixture
def cluster_primary(tmp_path, migrated_sqlite_template):
    """A primary's web app and sync API on one database, a dependent registered
    and heard from, and the admin signed in on the web side."""
    from app.services.accounts import create_user
    from app.services.sync import primary

    web_app = instance_app(tmp_path, migrated_sqlite_template, PRIMARY_ENV, serve="web")
    sync_app = make_app(tmp_path, PRIMARY_ENV, serve="sync")
    with web_app.app_context():
        primary.register_self()
        create_user(EMAIL, PASSWORD, is_admin=True)
        create_user("viewer@example.org", PASSWORD)
    sync = sync_app.test_client()
    token = sync.post("/sync/api/register", json=registration(), headers={"X-Cluster-Secret": SECRET}).get_json()["token"]
    reply = sync.put("/sync/api/heartbeat", headers=bearer(token), json={
        **heartbeat(), "connectionStatus": {"primaryReachable": True, "consecutiveFailures": 0, "outboxSize": 42}})
    assert reply.status_code == 200, reply.get_json()
    web = web_app.test_client()
    assert sign_in(web).status_code == 302
    web.token = csrf_token(web, "/")
    yield web_app, web, sync, token
    for application in (web_app, sync_app):
        with application.app_context():
            db.session.remove()
            db.engine.dispose()


def test_the_primary_lists_every_instance_with_its_state(cluster_primary):
    _, web, _, _ = cluster_primary
    html = web.get("/instances").get_data(as_text=True)
    assert "fra-1" in html and "(this instance)" in html and "frankfurt" in html
    own = html[html.index("(this instance)"):]
    own = own[:own.index("</tr>")]
    assert re.search(r"\d+ % · \d+ % · \d+ %", own), own  # the primary's own load, as dependents report theirs
    row = html[html.index(f'id="instance-{DEPENDENT_ID}"'):]
    row = row[:row.index("</tr>")]
    for shown in ("dep-1", "eu-west", "Active", "s ago", "42", "4 %"):
        assert shown in row, shown
    assert 'id="instance-rows" hx-get="/instances"' in html and 'hx-trigger="every 10s"' in html


def test_the_live_refresh_sends_the_rows_alone(cluster_primary):
    _, web, _, _ = cluster_primary
    rows = web.get("/instances", headers={"HX-Request": "true"})
    assert rows.status_code == 200
    html = rows.get_data(as_text=True)
    assert f'id="instance-{DEPENDENT_ID}"' in html and "<html" not in html
    assert "HX-Request" in rows.headers["Vary"]
    assert "HX-Request" in web.get("/instances").headers["Vary"]


def test_removing_an_instance_revokes_its_token_at_once(cluster_primary):
    web_app, web, sync, token = cluster_primary
    assert sync.get("/sync/api/instances", headers=bearer(token)).status_code == 200
    response = post(web, f"/instances/{DEPENDENT_ID}/remove")
    assert response.status_code == 303
    assert "removed and its token revoked" in web.get("/instances").get_data(as_text=True)
    assert sync.get("/sync/api/instances", headers=bearer(token)).status_code == 401
    with web_app.app_context():
        assert db.session.get(MonitoringInstance, DEPENDENT_ID) is None


def test_the_primary_cannot_remove_itself_nor_an_unknown_instance(cluster_primary):
    web_app, web, _, _ = cluster_primary
    with web_app.app_context():
        own_id = configuration.instance_id()
    response = post(web, f"/instances/{own_id}/remove")
    assert response.status_code == 303
    assert "cannot remove itself" in web.get("/instances").get_data(as_text=True)
    assert post(web, "/instances/no-such-instance/remove").status_code == 404
    with web_app.app_context():
        assert db.session.get(MonitoringInstance, own_id) is not None


def test_removal_needs_an_administrator_and_a_csrf_token(cluster_primary):
    web_app, web, sync, token = cluster_primary
    assert web.post(f"/instances/{DEPENDENT_ID}/remove").status_code == 400  # no CSRF token
    viewer = web_app.test_client()
    assert sign_in(viewer, "viewer@example.org").status_code == 302
    viewer.token = csrf_token(viewer, "/")
    assert "Remove</button>" not in viewer.get("/instances").get_data(as_text=True)
    assert post(viewer, f"/instances/{DEPENDENT_ID}/remove").status_code == 403
    assert sync.get("/sync/api/instances", headers=bearer(token)).status_code == 200


def test_a_dependent_shows_its_link_to_the_primary(tmp_path, migrated_sqlite_template):
    from app.services.accounts import create_user

    application = instance_app(tmp_path, migrated_sqlite_template, {
        "PRIMARY_SYNC_URL": "http://127.0.0.1:9", "SYNC_SHARED_SECRET": SECRET}, serve="web")
    with application.app_context():
        create_user(EMAIL, PASSWORD, is_admin=True)
        configuration.set_state(dependent.FAILURES, "3")
        db.session.commit()
    client = application.test_client()
    sign_in(client)
    html = client.get("/instances").get_data(as_text=True)
    assert "http://127.0.0.1:9" in html and "3 failed rounds in a row" in html and "never" in html
    assert "not yet" in html  # registered
    with application.app_context():
        configuration.set_state(dependent.TOKEN, "t0ken")
        configuration.set_state(dependent.TOKEN_REFUSED_AT, "2026-11-28T01:02:03+00:00")
        db.session.commit()
    html = client.get("/instances").get_data(as_text=True)
    assert "Token refused" in html and "2026-11-28 01:02:03 UTC" in html
    assert client.get("/instances", headers={"HX-Request": "true"}).status_code == 286  # nothing to poll
    client.token = csrf_token(client, "/")
    assert post(client, f"/instances/{DEPENDENT_ID}/remove").status_code == 409
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


def test_a_standalone_instance_explains_how_to_join_a_cluster(web):
    html = web.get("/instances").get_data(as_text=True)
    assert "runs standalone" in html and "ENABLE_SYNC_API=true" in html


def test_an_endpoint_on_the_primary_shows_each_location_s_newest_result(cluster_primary):
    from app.checks import CheckResult
    from app.services.endpoints import create_endpoint
    from app.services.results import record_results
    from tests.sync.test_sync_api import result

    web_app, web, sync, token = cluster_primary
    with web_app.app_context():
        endpoint_id = create_endpoint({"name": "shop", "checkType": "tcp", "target": "127.0.0.1", "port": 1}).id
        record_results([(endpoint_id, CheckResult(is_ok=True, check_type="tcp", response_time_ms=12.0))],
                       instance_id=configuration.instance_id(), location="frankfurt")
    down = result(endpoint_id, isOk=False, status="DOWN", responseTime=None, failureReason="refused")
    reply = sync.put("/sync/api/heartbeat", headers=bearer(token), json=heartbeat([down]))
    assert reply.status_code == 200, reply.get_json()
    html = web.get(f"/endpoints/{endpoint_id}").get_data(as_text=True)
    section = html[html.index("<h2>Locations</h2>"):]
    section = section[:section.index("</section>")]
    own = section[section.index("frankfurt"):]
    own = own[:own.index("</tr>")]
    assert "this instance" in own and "Up" in own and "12 ms" in own
    remote = section[section.index("eu-west"):]
    remote = remote[:remote.index("</tr>")]
    assert "dep-1" in remote and "Down" in remote


def test_a_standalone_endpoint_page_has_no_locations_section(web, app):
    from tests.ui.conftest import make_endpoint

    endpoint_id = make_endpoint(app)
    assert "<h2>Locations</h2>" not in web.get(f"/endpoints/{endpoint_id}").get_data(as_text=True)


def test_the_page_shows_the_cluster_transitions_and_a_fenced_primary(cluster_primary):
    web_app, web, _, _ = cluster_primary
    with web_app.app_context():
        seen = configuration.snapshot()
        assert configuration.transition(seen, new_role="fenced", new_epoch=seen.epoch, primary_id=seen.instance_id,
                                        primary_url=None, kind="fence",
                                        detail="only 1 of 2 members in reach for 12 s")
    html = web.get("/instances").get_data(as_text=True)
    assert "has fenced itself" in html and "fenced at epoch 0" in html
    events = html[html.index('class="cluster-events"'):]
    assert "fence" in events and "only 1 of 2 members in reach for 12 s" in events
    assert "Automatic failover needs three members or more" in html
    # Fenced, it takes no configuration changes.
    assert "Read-only" in web.get("/").get_data(as_text=True)
