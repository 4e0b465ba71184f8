"""The JSON API's consensus fields: what endpoints take (locations, rule,
PARTIAL alerts, certificate days), the ``consensus`` of every answer, and
the ``?consensus=`` filter."""
import pytest
from sqlalchemy import func, select

from app.checks import CheckResult
from app.extensions import db
from app.models import Endpoint
from app.services import configuration
from app.services.results import record_results

ENDPOINT = {"name": "Shop", "checkType": "tcp", "target": "127.0.0.1", "port": 9, "intervalSeconds": 30,
            "timeoutSeconds": 5}


def _count(app):
    with app.app_context():
        return db.session.execute(select(func.count(Endpoint.id))).scalar_one()


def test_an_answer_carries_the_consensus_and_its_location(app, client, auth_headers):
    created = client.post("/api/v1/endpoints", json={**ENDPOINT, "consensusRule": "atLeast:2",
                                                     "alertOnPartial": True, "certExpiryDays": 30},
                          headers=auth_headers)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert (body["consensusRule"], body["alertOnPartial"], body["certExpiryDays"], body["locations"]) == (
        "atLeast:2", True, 30, None)
    assert body["consensus"]["status"] == "PENDING" and body["consensus"]["locations"] == []
    with app.app_context():
        own_id, location = configuration.instance_identity()
        record_results([(body["id"], CheckResult(is_ok=False, check_type="tcp", failure_reason="refused"))],
                       instance_id=own_id, location=location)
    answer = client.get(f"/api/v1/endpoints/{body['id']}", headers=auth_headers).get_json()
    consensus = answer["consensus"]
    # A standalone is a cluster of one: atLeast:2 is capped at its one location.
    assert (consensus["status"], consensus["totalLocations"], consensus["successfulLocations"]) == ("DOWN", 1, 0)
    assert consensus["rule"] == "atLeast:2"
    [here] = consensus["locations"]
    assert (here["instanceId"], here["location"], here["status"], here["fresh"], here["probeOffline"]) == (
        own_id, location, "DOWN", True, False)
    assert set(here) == {"instanceId", "instanceName", "location", "status", "responseTimeMs", "checkedAt",
                         "fresh", "probeOffline"}


def test_the_list_filters_by_consensus(app, client, auth_headers):
    ids = [client.post("/api/v1/endpoints", json={**ENDPOINT, "name": name}, headers=auth_headers).get_json()["id"]
           for name in ("a", "b")]
    with app.app_context():
        db.session.get(Endpoint, ids[1]).status = "PARTIAL"
        db.session.commit()
    listed = client.get("/api/v1/endpoints?consensus=PARTIAL", headers=auth_headers).get_json()["endpoints"]
    assert [e["id"] for e in listed] == [ids[1]]
    refused = client.get("/api/v1/endpoints?consensus=SIDEWAYS", headers=auth_headers)
    assert refused.status_code == 400 and "consensus" in refused.get_json()["fields"]


@pytest.mark.parametrize(("change", "field"), [
    ({"consensusRule": "most"}, "consensusRule"),
    ({"consensusRule": "atLeast:0"}, "consensusRule"),
    ({"locations": []}, "locations"),
    ({"locations": ["no such id!"]}, "locations"),
    ({"locations": ["5f0c2a6e-0d7a-4c47-9d54-6a1f3a0b7c11"]}, "locations"),  # not a member
    ({"certExpiryDays": 0}, "certExpiryDays"),
    ({"alertOnPartial": "sometimes"}, "alertOnPartial"),
])
def test_a_bad_consensus_field_is_named_and_stores_nothing(app, client, auth_headers, change, field):
    before = _count(app)
    response = client.post("/api/v1/endpoints", json={**ENDPOINT, **change}, headers=auth_headers)
    assert response.status_code == 400
    assert field in response.get_json()["fields"], response.get_json()
    assert _count(app) == before


def test_locations_name_the_instances_that_check(app, client, auth_headers):
    with app.app_context():
        own_id = configuration.instance_id()
    created = client.post("/api/v1/endpoints", json={**ENDPOINT, "locations": [own_id]}, headers=auth_headers)
    assert created.status_code == 201 and created.get_json()["locations"] == [own_id]
    with app.app_context():
        assert db.session.get(Endpoint, created.get_json()["id"]).checked_here is True


def test_the_command_line_takes_the_consensus_settings(app):
    result = app.test_cli_runner().invoke(args=[
        "endpoints", "add", "--name", "Gateway", "--type", "tcp", "--target", "127.0.0.1", "--port", "9",
        "--consensus-rule", "atLeast:1", "--alert-on-partial", "--cert-expiry-days", "21"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        endpoint = db.session.execute(select(Endpoint)).scalar_one()
        assert (endpoint.consensus_rule, endpoint.consensus_min_down, endpoint.alert_on_partial,
                endpoint.cert_expiry_days) == ("atLeast", 1, True, 21)
    refused = app.test_cli_runner().invoke(args=[
        "endpoints", "add", "--name", "Bad", "--type", "tcp", "--target", "127.0.0.1", "--port", "9",
        "--consensus-rule", "most"])
    assert refused.exit_code != 0 and "consensusRule" in refused.output
