"""Creating endpoints in bulk through the JSON API (``POST
/api/v1/endpoints/batch``): all or none, each bad item named by its index
and field, the count and size limits, one configuration version for the
batch, ids that later creates never reuse; on SQLite and PostgreSQL."""
import base64

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import Endpoint, NotificationService
from app.models.endpoint import endpoint_notifications
from app.services import configuration
from app.services.endpoints import MAX_BATCH_ENDPOINTS

ADMIN = ("admin@example.org", "correct horse battery")
VIEWER = ("viewer@example.org", "viewer password 123")
URL = "/api/v1/endpoints/batch"


def basic(email, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request):
    """A standalone app with an administrator, a viewer and a default notification service."""
    from app.services.accounts import create_user
    from app.services.notifications import create_service

    application = request.getfixturevalue("app" if request.param == "sqlite" else "pg_app")
    with application.app_context():
        create_user(*ADMIN, is_admin=True)
        create_user(*VIEWER, is_admin=False)
        create_service({"name": "default hook", "kind": "webhook", "isDefault": True,
                        "config": {"url": "http://127.0.0.1:9/default"}})
        create_service({"name": "pager", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/pager"}})
    return application


def items(count: int) -> list[dict]:
    kinds = [
        lambda i: {"checkType": "http", "target": f"http://127.0.0.1:9/{i}", "options": {"keyword": "ok"}},
        lambda i: {"checkType": "tcp", "target": "127.0.0.1", "port": 1000 + i},
        lambda i: {"checkType": "ping", "target": "127.0.0.1"},
    ]
    return [{"name": f"endpoint {i}", **kinds[i % 3](i), "group": f"group {i % 2}"} for i in range(count)]


def post(application, body, who=ADMIN, **kwargs):
    return application.test_client().post(URL, json=body, headers=basic(*who), **kwargs)


def state(application) -> tuple:
    """What a refused batch must leave as it was: endpoints, links, the version."""
    with application.app_context():
        endpoints = db.session.execute(select(func.count(Endpoint.id))).scalar_one()
        links = db.session.execute(select(func.count()).select_from(endpoint_notifications)).scalar_one()
        return endpoints, links, configuration.config_version()


def service_id(application, name: str) -> int:
    with application.app_context():
        return db.session.execute(select(NotificationService.id).where(NotificationService.name == name)).scalar_one()


def test_it_creates_every_endpoint_of_a_batch_in_order_and_moves_the_version_once(store):
    before = state(store)
    pager = service_id(store, "pager")
    batch = items(30)
    batch[4]["notificationServiceIds"] = [pager]
    batch[5]["notificationServiceIds"] = []
    batch[6].update(intervalSeconds=30, consensusRule="atLeast:2", isPaused=True, failureThreshold=3)

    response = post(store, {"endpoints": batch})

    assert response.status_code == 201, response.get_json()
    answer = response.get_json()
    assert answer["created"] == 30 and len(set(answer["endpointIds"])) == 30
    assert answer["configVersion"] == before[2] + 1 == state(store)[2]
    client = store.test_client()
    shown = [client.get(f"/api/v1/endpoints/{i}", headers=basic(*ADMIN)).get_json() for i in answer["endpointIds"]]
    assert [e["name"] for e in shown] == [item["name"] for item in batch]
    assert [e["status"] for e in shown] == ["PENDING"] * 30
    default = service_id(store, "default hook")
    assert shown[0]["notificationServiceIds"] == [default]  # none named: the default services
    assert shown[4]["notificationServiceIds"] == [pager]
    assert shown[5]["notificationServiceIds"] == []
    assert (shown[6]["intervalSeconds"], shown[6]["consensusRule"], shown[6]["isPaused"],
            shown[6]["failureThreshold"], shown[6]["timeoutSeconds"]) == (30, "atLeast:2", True, 3, 10.0)
    assert shown[1]["port"] == 1001 and shown[0]["options"] == {"keyword": "ok"}
    assert shown[2]["timeoutSeconds"] == 10.0  # the default of a 60 s interval, as on a single create
    with store.app_context():
        assert db.session.execute(select(Endpoint.next_check_at).where(Endpoint.id == answer["endpointIds"][0])
                                  ).scalar_one() == 0.0  # checked at once


def test_an_endpoint_created_after_a_batch_gets_an_id_of_its_own(store):
    first = post(store, {"endpoints": items(3)}).get_json()["endpointIds"]
    client = store.test_client()
    single = client.post("/api/v1/endpoints", json=items(1)[0], headers=basic(*ADMIN))
    assert single.status_code == 201
    assert single.get_json()["id"] > max(first)
    # A deleted endpoint's id is never handed out again, by a batch either.
    assert client.delete(f"/api/v1/endpoints/{single.get_json()['id']}", headers=basic(*ADMIN)).status_code == 204
    second = post(store, {"endpoints": items(2)}).get_json()["endpointIds"]
    assert min(second) > single.get_json()["id"]


def test_it_names_every_bad_field_of_every_bad_item_and_creates_nothing(store):
    before = state(store)
    batch = items(6)
    batch[1]["port"] = 70000
    batch[3].update(intervalSeconds="60", colour="red")
    batch[5] = "not an endpoint"

    response = post(store, {"endpoints": batch})

    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "validation_error"
    assert set(body["fields"]) == {"endpoints[1].port", "endpoints[3].intervalSeconds", "endpoints[3].colour",
                                   "endpoints[5]"}
    assert body["fields"]["endpoints[1].port"] == "must be between 1 and 65535"
    assert body["message"].startswith("nothing was created: endpoints[1].port")
    assert "4 problems in 3 items" in body["message"]
    assert state(store) == before


@pytest.mark.parametrize(("body", "field"), [
    ({"endpoints": []}, "endpoints"),
    ({"endpoints": {"name": "one"}}, "endpoints"),
    ({}, "endpoints"),
    ({"endpoints": items(1), "prune": True}, "prune"),
    ({"endpoints": [{**items(1)[0], "notificationServiceIds": [999]}]}, "endpoints[0].notificationServiceIds"),
    ({"endpoints": [{**items(1)[0], "locations": ["no-such-instance"]}]}, "endpoints[0].locations"),
    ({"endpoints": [{**items(1)[0], "options": {"headers": {"Authorization": "********"}}}]},
     "endpoints[0].options.headers.Authorization"),
    ({"endpoints": [*items(2), {**items(1)[0], "timeoutSeconds": 90}]}, "endpoints[2].timeoutSeconds"),
])
def test_any_bad_input_changes_nothing(store, body, field):
    before = state(store)
    response = post(store, body)
    assert response.status_code == 400, response.get_json()
    assert field in response.get_json()["fields"], response.get_json()
    assert state(store) == before


def test_it_refuses_more_endpoints_than_the_limit(store):
    before = state(store)
    one = {"name": "x", "checkType": "ping", "target": "127.0.0.1"}
    response = post(store, {"endpoints": [one] * (MAX_BATCH_ENDPOINTS + 1)})
    assert response.status_code == 400
    body = response.get_json()
    assert body["fields"] == {"endpoints": "holds 10,001 endpoints; at most 10,000 are created in one request: "
                                           "send the rest in another"}
    assert state(store) == before


def test_it_refuses_a_body_over_the_size_limit_with_a_413(store):
    store.config["ENDPOINT_BATCH_MAX_BYTES"] = 4096
    before = state(store)
    response = post(store, {"endpoints": items(100)})
    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"
    assert state(store) == before
    assert post(store, {"endpoints": items(2)}).status_code == 201  # a small one still goes in


def test_it_refuses_viewers_and_instances_that_take_no_configuration(store):
    before = state(store)
    assert post(store, {"endpoints": items(2)}, who=VIEWER).status_code == 403
    with store.app_context():
        configuration.set_role("dependent", new_epoch=1, new_primary_url="http://primary.test:3002")
        db.session.commit()
    response = post(store, {"endpoints": items(2)})
    assert response.status_code == 409 and response.get_json()["error"] == "read_only"
    assert "http://primary.test:3002" in response.get_json()["message"]
    assert state(store) == before
