"""Secrets replicated to a failover candidate: they cross the sync API in
plain text (TLS in production) and each instance stores them under its own
key; promoted, the candidate sends the inherited alert with the decrypted
secrets. A real primary's sync API on loopback, SQLite and PostgreSQL."""
from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select, text

from app.checks import CheckResult
from app.config import ROLE_PRIMARY
from app.extensions import db
from app.models import NotificationDelivery
from app.secret_box import current_box, looks_encrypted
from app.services import alerts, configuration
from app.services.endpoints import create_endpoint
from app.services.notifications import create_service
from app.services.results import record_results
from app.services.sync import replication
from tests.sync.test_replication import cluster, instances, pg_databases, sync, webhook  # noqa: F401  (fixtures)

HOOK_TOKEN = "T0KEN-hook-s3cret"
BEARER = "Bearer b34rer-s3cret"
URL_PASSWORD = "pa55-url-s3cret"
API_KEY = "x-api-k3y-s3cret"


def key_of(application) -> str:
    with application.app_context():
        [key] = current_box().keys
        return key


def stored(application, service_id: int, endpoint_id: int) -> dict:
    """The tokens as stored, read by plain SQL."""
    with application.app_context():
        config = db.session.execute(text("SELECT config FROM notification_services WHERE id = :id"),
                                    {"id": service_id}).scalar_one()
        target, options = db.session.execute(text("SELECT target, options FROM endpoints WHERE id = :id"),
                                             {"id": endpoint_id}).one()
        db.session.rollback()
    config = json.loads(config) if config.startswith('"') else config  # SQLite hands JSON over as text
    options = json.loads(options) if isinstance(options, str) else options
    return {"config": config, "userinfo": target.split("://", 1)[1].split("@")[0],
            "header": options["headers"]["X-Api-Key"]}


def test_a_candidate_stores_replicated_secrets_under_its_own_key_and_sends_with_them_once_promoted(
        cluster, webhook):
    primary_app, member = cluster
    with primary_app.app_context():
        primary_id = configuration.instance_id()
        service_id = create_service({"name": "ops", "kind": "webhook", "isDefault": True, "config": {
            "url": webhook.url(f"/hook?token={HOOK_TOKEN}"), "headers": {"Authorization": BEARER}}}).id
        # Checked by the primary alone, so one result decides.
        endpoint_id = create_endpoint({"name": "shop", "checkType": "http", "locations": [primary_id],
                                       "target": f"http://ops:{URL_PASSWORD}@127.0.0.1:9/health",
                                       "options": {"headers": {"X-Api-Key": API_KEY}}}).id
        record_results([(endpoint_id, CheckResult(is_ok=False, check_type="http", failure_reason="refused"))],
                       instance_id=primary_id, location="frankfurt")
        assert len(alerts.raise_alerts([endpoint_id])) == 1

    candidate = member("candidate", 1)
    sync(candidate)
    sync(candidate)  # the second heartbeat brings the incidents, once the membership is known
    primary_key, candidate_key = key_of(primary_app), key_of(candidate)
    assert primary_key != candidate_key  # generated per instance, never shared

    for application, own, other in ((primary_app, primary_key, candidate_key),
                                    (candidate, candidate_key, primary_key)):
        place = stored(application, service_id, endpoint_id)
        assert not [s for s in (HOOK_TOKEN, URL_PASSWORD, API_KEY, BEARER) if s in json.dumps(place)]
        for token in place.values():
            assert looks_encrypted(token)
            Fernet(own).decrypt(token.encode())
            with pytest.raises(InvalidToken):
                Fernet(other).decrypt(token.encode())

    with candidate.app_context():
        # The dependent's sync token, got with the join secret, is encrypted too.
        raw_token = db.session.execute(text("SELECT value FROM instance_config WHERE key = 'sync_token'")).scalar_one()
        assert looks_encrypted(raw_token) and Fernet(candidate_key).decrypt(raw_token.encode())
        assert configuration.get_state(configuration.SYNC_TOKEN) == Fernet(candidate_key).decrypt(
            raw_token.encode()).decode()
        inherited = db.session.execute(select(NotificationDelivery)).scalar_one()

        # Promoted (as the failover service does it): it sends the inherited alert itself.
        configuration.set_role(ROLE_PRIMARY, new_epoch=1, new_primary_url=None)
        db.session.commit()
        assert replication.adopt_inherited_deliveries() == 1
        assert alerts.deliver(inherited.id) == "sent"
    [request] = webhook.requests
    assert request["path"] == f"/hook?token={HOOK_TOKEN}" and request["headers"]["Authorization"] == BEARER
    assert request["json"]["event"] == "down" and request["json"]["endpoint"]["target"] == (
        "http://127.0.0.1:9/health")  # the alert itself never carries the target's credentials
