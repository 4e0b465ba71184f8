"""The instances page: the instance manager on a primary (every column, live
rows, the failover order edited in place, promote and demote through the
failover service, removal that revokes the token), a dependent's link to its
primary and the membership it holds, and standalone."""
import re
import threading
import uuid
from datetime import timedelta

import pytest
from werkzeug.serving import make_server

from app.extensions import db
from app.models import MonitoringInstance, ResponseTime, utcnow
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
    # The refresh waits while an order is being edited.
    assert "htmx:beforeRequest" in html and "defaultValue" in html


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


# --- the instance manager: every column ------------------------------------------------------


def row_of(html: str, instance_id: str) -> str:
    row = html[html.index(f'id="instance-{instance_id}"'):]
    return row[:row.index("</tr>")]


def cell(row: str, name: str) -> str:
    """The text of the row's cell of class ``name``, tags and spacing dropped."""
    match = re.search(rf'<td class="{name}[^"]*"[^>]*>(.*?)</td>', row, re.S)
    assert match, f"no {name} cell in {row}"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


def own_id(application) -> str:
    with application.app_context():
        return configuration.instance_id()


def test_each_column_shows_the_instance_s_state(cluster_primary):
    from app.services.endpoints import create_endpoint
    from tests.sync.test_sync_api import result

    web_app, web, sync, token = cluster_primary
    with web_app.app_context():
        endpoint_id = create_endpoint({"name": "shop", "checkType": "tcp", "target": "127.0.0.1", "port": 1}).id
    now = utcnow()
    recent = [result(endpoint_id, checkedAt=(now - timedelta(seconds=20 * n + 5)).isoformat()) for n in range(10)]
    older = [result(endpoint_id, checkedAt=(now - timedelta(minutes=8 + n)).isoformat()) for n in range(3)]
    reply = sync.put("/sync/api/heartbeat", headers=bearer(token), json={
        **heartbeat(recent + older), "epoch": 0, "connectionStatus": {
            "outboxSize": 42, "syncErrors": 7, "lastSyncErrorAt": (now - timedelta(seconds=30)).isoformat(),
            "lastSyncError": "http://127.0.0.1:9 unreachable: ConnectionError"}})
    assert reply.status_code == 200, reply.get_json()
    with web_app.app_context():
        # The heartbeat came 17 s ago (every 5 s: two missed); the cluster moved to epoch 1 since.
        instance = db.session.get(MonitoringInstance, DEPENDENT_ID)
        instance.last_heartbeat_at = utcnow() - timedelta(seconds=17)
        db.session.commit()
        state = configuration.snapshot()
        configuration.set_role("primary", new_epoch=1, new_primary_url=None, new_primary_id=state.instance_id)
        db.session.commit()

    html = web.get("/instances").get_data(as_text=True)
    row = row_of(html, DEPENDENT_ID)
    assert cell(row, "name") == "dep-1" and "<td>eu-west</td>" in row
    assert cell(row, "role") == "dependent"
    assert cell(row, "epoch") == "0 behind"
    assert "Active" in row
    assert re.fullmatch(r"1[78] s ago", cell(row, "heartbeat")), cell(row, "heartbeat")
    assert re.fullmatch(r"1[23] s late \(2 missed\) \(every 5 s\)", cell(row, "lag")), cell(row, "lag")
    assert cell(row, "rate") == "2.0"  # ten results in the last five minutes; older ones do not count
    assert re.fullmatch(r"7 last 3[01] s ago: http://127.0.0.1:9 unreachable: ConnectionError",
                        cell(row, "sync-errors")), cell(row, "sync-errors")
    assert cell(row, "outbox num") == "42"
    assert "v1" in row and "4 % · 40 % · 0 %" in row
    assert re.search(r'name="failover_order"[^>]*value="1"', row, re.S)

    own = row_of(html, own_id(web_app))
    assert cell(own, "role") == "primary" and cell(own, "epoch") == "1"
    assert cell(own, "lag") == "–" and cell(own, "sync-errors") == "–"  # its own: no heartbeats to be late
    assert cell(own, "rate") == "0.0"
    for header in ("Role", "Epoch", "Last heartbeat", "Heartbeat lag", "Results / min", "Sync errors", "Outbox",
                   "Configuration", "CPU · memory · disk", "Version", "Failover order"):
        assert f">{header}</th>" in html, header


def test_a_member_on_time_and_one_too_old_to_report_sync_errors(cluster_primary):
    web_app, web, _, _ = cluster_primary
    row = row_of(web.get("/instances").get_data(as_text=True), DEPENDENT_ID)
    assert cell(row, "lag") == "on time (every 5 s)"
    assert cell(row, "sync-errors") == "–"  # its heartbeats carry no syncErrors: not "0"


def test_the_primary_keeps_what_heartbeats_say_of_failed_rounds(cluster_primary):
    web_app, web, sync, token = cluster_primary
    reply = sync.put("/sync/api/heartbeat", headers=bearer(token), json={
        **heartbeat(), "connectionStatus": {"syncErrors": 0, "someFieldOfALaterVersion": True}})
    assert reply.status_code == 200, reply.get_json()
    assert cell(row_of(web.get("/instances").get_data(as_text=True), DEPENDENT_ID), "sync-errors") == "0"
    refused = sync.put("/sync/api/heartbeat", headers=bearer(token), json={
        **heartbeat(), "connectionStatus": {"syncErrors": -1}})
    assert refused.status_code == 400 and "connectionStatus.syncErrors" in refused.get_json()["fields"]


def test_a_dependent_counts_its_failed_rounds_and_reports_them(tmp_path, migrated_sqlite_template):
    from app.services.sync.schemas import HeartbeatPayload
    from tests.peers.ports import reserve_port

    application = instance_app(tmp_path, migrated_sqlite_template, {
        "PRIMARY_SYNC_URL": f"http://127.0.0.1:{reserve_port()}", "SYNC_SHARED_SECRET": SECRET,
        "CONNECTION_TIMEOUT": "2"}, serve="none")
    with application.app_context():
        assert dependent.heartbeat_payload([])["connectionStatus"]["syncErrors"] == 0
        for _ in range(2):
            with pytest.raises(dependent.PrimaryUnavailable):
                dependent.sync_once()
        status = dependent.heartbeat_payload([])["connectionStatus"]
        assert status["syncErrors"] == 2 and "unreachable" in status["lastSyncError"]
        assert HeartbeatPayload.model_validate(dependent.heartbeat_payload([])).connection_status.sync_errors == 2
        # A round that works resets the failures in a row, not the count.
        configuration.set_state(dependent.FAILURES, "0")
        db.session.commit()
        assert dependent.heartbeat_payload([])["connectionStatus"]["syncErrors"] == 2
        db.session.remove()
        db.engine.dispose()


# --- the failover order, edited in place ----------------------------------------------------------


def failover_order(application, instance_id=DEPENDENT_ID) -> int:
    with application.app_context():
        return db.session.get(MonitoringInstance, instance_id).failover_order


def config_version(application) -> int:
    with application.app_context():
        return configuration.config_version()


def test_an_administrator_changes_the_failover_order_in_place(cluster_primary):
    from app.services.sync import primary

    web_app, web, _, _ = cluster_primary
    version = config_version(web_app)
    response = post(web, f"/instances/{DEPENDENT_ID}/failover-order", {"failover_order": " 3 "})
    assert response.status_code == 303 and response.headers["Location"] == "/instances"
    html = web.get("/instances").get_data(as_text=True)
    assert "Failover order of “dep-1” is now 3 (was 1)" in html
    assert re.search(r'name="failover_order"[^>]*value="3"', row_of(html, DEPENDENT_ID), re.S)
    assert failover_order(web_app) == 3
    # A configuration change: every member pulls it (a candidate in its replica).
    assert config_version(web_app) == version + 1
    with web_app.app_context():
        replica = primary.sync_configuration(DEPENDENT_ID)["replica"]
    assert {m["instanceId"]: m["failoverOrder"] for m in replica["instances"]}[DEPENDENT_ID] == 3
    # Order 0: no longer a candidate; it still gets the membership, without secrets.
    assert post(web, f"/instances/{DEPENDENT_ID}/failover-order", {"failover_order": "0"}).status_code == 303
    with web_app.app_context():
        config = primary.sync_configuration(DEPENDENT_ID)
    assert "replica" not in config
    assert {m["instanceId"]: m["failoverOrder"] for m in config["members"]}[DEPENDENT_ID] == 0


@pytest.mark.parametrize("value, says", [
    ("abc", "“abc” is not a whole number"),
    ("1.5", "“1.5” is not a whole number"),
    ("-1", "-1 is out of range"),
    ("10001", "10001 is out of range"),
    ("99999999999999999999999", "99999999999999999999999 is out of range"),
    ("", "a number is required"),
])
def test_a_bad_failover_order_is_refused_naming_the_field(cluster_primary, value, says):
    web_app, web, _, _ = cluster_primary
    version = config_version(web_app)
    response = post(web, f"/instances/{DEPENDENT_ID}/failover-order", {"failover_order": value})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    message = html[html.index('<p class="flash error" role="alert">'):]
    message = message[:message.index("</p>")]
    assert "Failover order of “dep-1”" in message and says in message and "Nothing was changed" in message
    assert "from 0 to 10,000" in message
    row = row_of(html, DEPENDENT_ID)
    assert 'aria-invalid="true"' in row and f'value="{value}"' in row and says in row
    assert failover_order(web_app) == 1 and config_version(web_app) == version


def test_viewers_see_the_order_and_change_nothing(cluster_primary):
    web_app, web, _, _ = cluster_primary
    viewer = web_app.test_client()
    assert sign_in(viewer, "viewer@example.org").status_code == 302
    viewer.token = csrf_token(viewer, "/")
    html = viewer.get("/instances").get_data(as_text=True)
    row = row_of(html, DEPENDENT_ID)
    assert cell(row, "order") == "1" and 'name="failover_order"' not in html
    for button in ("Promote</button>", "Demote</button>", "Remove</button>", "Save</button>"):
        assert button not in html, button
    assert cell(row, "rate") == "0.0" and cell(row, "outbox num") == "42"  # everything else as an admin sees it
    assert post(viewer, f"/instances/{DEPENDENT_ID}/failover-order", {"failover_order": "5"}).status_code == 403
    assert post(viewer, f"/instances/{DEPENDENT_ID}/promote").status_code == 403
    assert post(viewer, f"/instances/{own_id(web_app)}/demote").status_code == 403
    assert failover_order(web_app) == 1
    with web_app.app_context():
        assert configuration.is_primary()


def test_the_order_form_needs_a_csrf_token_and_a_member(cluster_primary):
    web_app, web, _, _ = cluster_primary
    assert web.post(f"/instances/{DEPENDENT_ID}/failover-order", data={"failover_order": "5"}).status_code == 400
    assert post(web, "/instances/no-such-instance/failover-order", {"failover_order": "5"}).status_code == 404
    assert failover_order(web_app) == 1


def test_the_live_refresh_keeps_the_order_forms(cluster_primary):
    _, web, _, _ = cluster_primary
    rows = web.get("/instances", headers={"HX-Request": "true"}).get_data(as_text=True)
    form = rows[rows.index('class="failover-order"') - 200:]
    assert f'action="/instances/{DEPENDENT_ID}/failover-order"' in form and 'name="csrf_token"' in form
    assert 'max="10000"' in rows


# --- promote and demote ---------------------------------------------------------------------------


def test_promote_and_demote_say_what_will_happen(cluster_primary):
    web_app, web, _, _ = cluster_primary
    html = web.get("/instances").get_data(as_text=True)
    own = row_of(html, own_id(web_app))
    assert ('data-confirm="Demote: fra-1 stops being the primary; dep-1 (next in failover order) takes over at '
            'epoch 1; alerts will come from dep-1."') in own
    assert 'onsubmit="return confirm(this.dataset.confirm)"' in own
    assert f'action="/instances/{own_id(web_app)}/demote"' in own and "Promote</button>" not in own
    row = row_of(html, DEPENDENT_ID)
    assert ('data-confirm="Promote: fra-1 stops being the primary; dep-1 takes over at epoch 1; alerts will come '
            'from dep-1."') in row and f'action="/instances/{DEPENDENT_ID}/promote"' in row
    # With failover order 0 nobody could take over: neither button is offered, and the page says why.
    assert post(web, f"/instances/{DEPENDENT_ID}/failover-order", {"failover_order": "0"}).status_code == 303
    html = web.get("/instances").get_data(as_text=True)
    assert "Demote</button>" not in html and "Promote</button>" not in html
    assert "Failover order 0: never becomes the primary." in row_of(html, DEPENDENT_ID)
    assert "No active member has a failover order above 0" in row_of(html, own_id(web_app))


def test_promote_and_demote_refused_by_the_failover_service_change_nothing(cluster_primary):
    from tests.peers.ports import reserve_port

    web_app, web, _, _ = cluster_primary
    with web_app.app_context():  # the candidate's sync API does not answer
        db.session.get(MonitoringInstance, DEPENDENT_ID).sync_url = f"http://127.0.0.1:{reserve_port()}"
        db.session.commit()
    assert post(web, f"/instances/{DEPENDENT_ID}/promote").status_code == 303
    assert "Promoting “dep-1” was refused: dep-1 is not in reach to take over. Nothing changed." in \
        web.get("/instances").get_data(as_text=True)
    own = own_id(web_app)
    assert post(web, f"/instances/{own}/demote").status_code == 303
    assert ("Demoting this primary was refused: no candidate (failover order above 0) is in reach to take over."
            in web.get("/instances").get_data(as_text=True))
    assert post(web, f"/instances/{DEPENDENT_ID}/demote").status_code == 303
    assert "Only the primary itself can be demoted" in web.get("/instances").get_data(as_text=True)
    assert post(web, f"/instances/{own}/promote").status_code == 303
    assert "This instance is the primary already." in web.get("/instances").get_data(as_text=True)
    assert web.post(f"/instances/{DEPENDENT_ID}/promote").status_code == 400  # no CSRF token
    with web_app.app_context():
        assert configuration.snapshot().is_primary and configuration.epoch() == 0
        assert configuration.get_state("failover_handing_over") is None


def _serve(application, port: int):
    server = make_server("127.0.0.1", port, application, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("button", ["promote", "demote"])
def test_promote_and_demote_hand_the_primary_role_over(tmp_path, migrated_sqlite_template, button):
    """A primary and a candidate with their sync APIs on loopback: the button
    on the primary's page runs the failover service's hand-over; the
    candidate wins the next epoch and the old primary follows it."""
    from app.services.accounts import create_user
    from app.services.sync import primary
    from tests.peers.ports import reserve_port

    primary_url, member_url = (f"http://127.0.0.1:{reserve_port()}" for _ in range(2))
    env = {**PRIMARY_ENV, "PUBLIC_SYNC_URL": primary_url, "CONNECTION_TIMEOUT": "5"}
    web_app = instance_app(tmp_path / "fra", migrated_sqlite_template, env, serve="web")
    sync_app = make_app(tmp_path / "fra", env, serve="sync")
    member = instance_app(tmp_path / "sgp", migrated_sqlite_template, {
        "PRIMARY_SYNC_URL": primary_url, "PUBLIC_SYNC_URL": member_url, "SYNC_SHARED_SECRET": SECRET,
        "INSTANCE_NAME": "sgp-1", "INSTANCE_LOCATION": "singapore", "FAILOVER_ORDER": "1",
        "CONNECTION_TIMEOUT": "5"}, serve="sync")
    servers = [_serve(sync_app, int(primary_url.rsplit(":", 1)[1])), _serve(member, int(member_url.rsplit(":", 1)[1]))]
    try:
        with web_app.app_context():
            primary.register_self()
            create_user(EMAIL, PASSWORD, is_admin=True)
        with member.app_context():
            dependent.sync_once()  # registers; the next round pulls the membership
            dependent.sync_once()
            member_id = configuration.instance_id()
            assert len(db.session.execute(db.select(MonitoringInstance)).scalars().all()) == 2
        web = web_app.test_client()
        sign_in(web)
        web.token = csrf_token(web, "/")
        html = web.get("/instances").get_data(as_text=True)
        target = member_id if button == "promote" else own_id(web_app)
        assert "fra-1 stops being the primary; sgp-1" in row_of(html, target)

        response = post(web, f"/instances/{target}/{button}")
        assert response.status_code == 303
        page = web.get("/instances").get_data(as_text=True)
        assert "“sgp-1” is the primary at epoch 1; this instance follows it" in page
        with member.app_context():
            state = configuration.snapshot()
            assert state.is_primary and state.epoch == 1
        with web_app.app_context():
            state = configuration.snapshot()
            assert not state.is_primary and state.epoch in (0, 1)  # fenced, or already following
            kinds = [e.kind for e in configuration.cluster_events()]
            assert "hand_over" in kinds
        assert "Demote</button>" not in page and 'name="failover_order"' not in page
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for application in (web_app, sync_app, member):
            with application.app_context():
                db.session.remove()
                db.engine.dispose()


# --- every member shows the membership ----------------------------------------------------------------


def test_a_dependent_shows_the_membership_the_primary_sent(tmp_path, migrated_sqlite_template):
    from app.services.accounts import create_user
    from app.services.sync import replication

    application = instance_app(tmp_path, migrated_sqlite_template, {
        "PRIMARY_SYNC_URL": "http://127.0.0.1:9", "SYNC_SHARED_SECRET": SECRET, "INSTANCE_NAME": "syd-1"},
        serve="web")
    primary_id = str(uuid.uuid4())
    with application.app_context():
        create_user(EMAIL, PASSWORD, is_admin=True)
        own = configuration.instance_id()
        members = [
            {"instanceId": primary_id, "instanceName": "fra-1", "location": "frankfurt", "role": "primary",
             "failoverOrder": 2, "status": "active", "registeredAt": utcnow().isoformat()},
            {"instanceId": own, "instanceName": "syd-1", "location": "sydney", "role": "dependent",
             "failoverOrder": 0, "status": "active", "registeredAt": utcnow().isoformat()}]
        dependent.apply_configuration({"configVersion": 4, "endpoints": [], "members": members})
        broken = [dict(members[0], failoverOrder=-1)]
        with pytest.raises(replication.InvalidReplica) as refused:
            dependent.apply_configuration({"configVersion": 5, "endpoints": [], "members": broken})
        assert "members.instances.0.failoverOrder" in refused.value.errors
        db.session.rollback()
        assert configuration.config_version() == 4
    client = application.test_client()
    sign_in(client)
    html = client.get("/instances").get_data(as_text=True)
    table = html[html.index('<table class="members">'):]
    fra = table[table.index(f'id="member-{primary_id}"'):]
    assert "fra-1" in fra[:fra.index("</tr>")] and '<td class="order">2</td>' in fra[:fra.index("</tr>")]
    syd = table[table.index(f'id="member-{own}"'):]
    assert "(this instance)" in syd[:syd.index("</tr>")] and "never the primary" in syd[:syd.index("</tr>")]
    assert "<dt>Members</dt><dd>2" in html
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


def test_results_per_minute_take_one_query_for_every_instance(cluster_primary):
    from sqlalchemy import event

    from app.services.sync import primary

    web_app, _, sync, _ = cluster_primary
    for n in range(3):
        other = f"5f0c2a6e-0d7a-4c47-9d54-6a1f3a0b7d0{n}"
        assert sync.post("/sync/api/register", json=registration(instanceId=other, instanceName=f"dep-{n + 2}"),
                         headers={"X-Cluster-Secret": SECRET}).status_code == 201
    statements = []
    with web_app.app_context():
        listen = lambda conn, cursor, statement, *args: statements.append(statement)  # noqa: E731
        event.listen(db.engine, "before_cursor_execute", listen)
        try:
            rows = primary.registry()
        finally:
            event.remove(db.engine, "before_cursor_execute", listen)
    assert len(rows) == 5
    assert len([s for s in statements if "response_times" in s]) == 1, statements
