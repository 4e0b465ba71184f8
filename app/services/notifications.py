"""Notification services: validation and CRUD, secrets kept out of sight.

The UI, the JSON API and tests all go through here. A service is a notifier
kind (see ``app.notifiers``) with its validated config. Secrets in the
config (apprise URLs, webhook URLs and headers) are never shown back:
``public_view`` masks them, and an update that omits a secret, or sends the
mask back unchanged, keeps the stored value.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from sqlalchemy import func, select

from app.extensions import db
from app.models import (
    DELIVERY_FAILED,
    DELIVERY_SENT,
    NotificationDelivery,
    NotificationService,
    endpoint_notifications,
    utcnow,
)
from app.notifiers import EVENT_TEST, NOTIFIERS, AlertMessage, DeliveryError, notifier_for
from app.services.alerts import failed_deliveries, instance_fields, recent_deliveries, retry_delivery
from app.services.input_errors import InvalidInput
from app.services.openapi import Answer
from app.services.validation_messages import messages_of

logger = logging.getLogger(__name__)

__all__ = [
    "InvalidNotificationService", "apply_input", "create_service", "default_services", "delete_service",
    "failed_deliveries", "get_service", "kinds", "list_services", "public_view", "recent_deliveries",
    "resolve_services", "retry_delivery", "send_test", "set_endpoint_services", "update_service",
    "validated_input",
]


class InvalidNotificationService(InvalidInput):
    """Bad notification service input; ``errors`` maps each bad field to its message."""


class ServiceInput(BaseModel):
    """A notification service as a client sends it (camelCase on the wire)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    kind: str = Field(json_schema_extra={"enum": list(NOTIFIERS)})
    config: dict[str, Any] = Field(default_factory=dict)
    is_enabled: bool = True
    is_default: bool = False

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value):
        if value not in NOTIFIERS:
            raise ValueError(f"must be one of {', '.join(NOTIFIERS)}")
        return value


def kinds() -> list[dict]:
    """The notifier kinds a form can offer, with which config fields are secret."""
    return [
        {"kind": cls.kind, "label": cls.label, "secretFields": sorted(cls.secret_fields),
         "fields": list(cls.config_model.model_json_schema(by_alias=True).get("properties", {}))}
        for cls in NOTIFIERS.values()
    ]


def _messages(exc: ValidationError, model, prefix: str = "") -> dict[str, str]:
    # The product's words; they never repeat the input, which may be a secret.
    unknown = "is not a setting of this kind of service" if prefix else "is not a field of a notification service"
    return messages_of(exc, model, prefix=prefix, unknown_field=unknown)


def _validated(data: Any, strict: bool = False) -> tuple[ServiceInput, dict]:
    """The parsed input and its kind's validated config, or ``InvalidNotificationService``.

    ``strict``: JSON's types as they are (the API), as for endpoints.
    """
    if not isinstance(data, dict):
        raise InvalidNotificationService({"body": "must be a JSON object"})
    try:
        spec = ServiceInput.model_validate(data, strict=strict)
    except ValidationError as exc:
        errors = _messages(exc, ServiceInput)
        # Report config problems too when the kind is known, so a form shows them all at once.
        kind = data.get("kind")
        if isinstance(kind, str) and kind in NOTIFIERS and isinstance(data.get("config"), dict):
            config_model = NOTIFIERS[kind].config_model
            try:
                config_model.model_validate(data["config"], strict=strict)
            except ValidationError as config_exc:
                errors.update(_messages(config_exc, config_model, "config."))
        raise InvalidNotificationService(errors) from None
    config_model = NOTIFIERS[spec.kind].config_model
    try:
        config = config_model.model_validate(spec.config, strict=strict)
    except ValidationError as exc:
        raise InvalidNotificationService(_messages(exc, config_model, "config.")) from None
    return spec, config.model_dump(mode="json", by_alias=True)


def _apply(service: NotificationService, spec: ServiceInput, config: dict) -> None:
    service.name = spec.name
    service.kind = spec.kind
    service.config = config
    service.is_enabled = spec.is_enabled
    service.is_default = spec.is_default


def create_service(data: dict, *, strict: bool = False) -> NotificationService:
    """Validate and store a new notification service (``strict``: JSON, see ``_validated``)."""
    spec, config = _validated(data, strict)
    service = NotificationService()
    _apply(service, spec, config)
    db.session.add(service)
    db.session.commit()
    logger.info("notification service %s (%s, %s) created", service.id, service.name, service.kind)
    return service


def update_service(service: NotificationService, data: dict, *, partial: bool = True,
                   strict: bool = False) -> NotificationService:
    """Patch a service (omitted fields keep their values) or, with
    ``partial=False``, replace it (omitted fields take their defaults).

    Either way ``config`` is taken as a whole, and its secrets that are
    omitted, empty, or sent back masked as ``public_view`` showed them keep
    the stored values, as long as the kind stays the same.
    """
    if not isinstance(data, dict):
        raise InvalidNotificationService({"body": "must be a JSON object"})
    if partial:
        merged = {
            "name": service.name, "kind": service.kind, "config": dict(service.config or {}),
            "isEnabled": service.is_enabled, "isDefault": service.is_default, **data,
        }
        if "kind" in data and "config" not in data and data["kind"] != service.kind:
            merged["config"] = {}  # the old kind's settings mean nothing to the new one
    else:
        merged = {"config": {}, **data}
    kind = merged.get("kind")
    if kind == service.kind and kind in NOTIFIERS and isinstance(merged["config"], dict):
        merged["config"] = NOTIFIERS[kind].keep_secrets(service.config or {}, merged["config"])
    spec, config = _validated(merged, strict)
    _apply(service, spec, config)
    db.session.commit()
    logger.info("notification service %s (%s) updated", service.id, service.name)
    return service


def validated_input(data: Any, *, stored: NotificationService | None = None,
                    strict: bool = False) -> tuple[ServiceInput, dict]:
    """``data`` as a whole service, validated, its omitted or masked secrets
    kept from ``stored`` as ``update_service`` keeps them; stores nothing."""
    if isinstance(data, dict) and stored is not None and data.get("kind") == stored.kind \
            and stored.kind in NOTIFIERS and isinstance(data.get("config"), dict):
        data = {**data, "config": NOTIFIERS[stored.kind].keep_secrets(stored.config or {}, data["config"])}
    return _validated(data, strict)


def apply_input(service: NotificationService, spec: ServiceInput, config: dict) -> None:
    """Set a validated input (see ``validated_input``) on a service; the caller adds and commits."""
    _apply(service, spec, config)


def delete_service(service: NotificationService) -> None:
    """Delete a service with its delivery history (one transaction)."""
    logger.info("notification service %s (%s) deleted", service.id, service.name)
    db.session.delete(service)
    db.session.commit()


def get_service(service_id: int) -> NotificationService | None:
    return db.session.get(NotificationService, service_id)


def list_services() -> list[NotificationService]:
    return list(db.session.execute(
        select(NotificationService).order_by(NotificationService.name, NotificationService.id)
    ).scalars())


def public_view(service: NotificationService) -> dict:
    """The service as the UI and API may show it: secrets masked."""
    cls = NOTIFIERS.get(service.kind)
    config = dict(service.config or {})
    endpoint_count = db.session.execute(
        select(func.count()).select_from(endpoint_notifications)
        .where(endpoint_notifications.c.notification_service_id == service.id)
    ).scalar_one()
    return {
        "id": service.id,
        "name": service.name,
        "kind": service.kind,
        "kindLabel": cls.label if cls else service.kind,
        "config": cls.public_config(config) if cls else {},
        # Secret fields that hold a value: a form says "leave blank to keep".
        "secretsSet": sorted(key for key in (cls.secret_fields if cls else ()) if config.get(key)),
        "isEnabled": service.is_enabled,
        "isDefault": service.is_default,
        "endpointCount": endpoint_count,
        "createdAt": service.created_at.isoformat() if service.created_at else None,
        "updatedAt": service.updated_at.isoformat() if service.updated_at else None,
    }


def default_services() -> list[NotificationService]:
    """The services new endpoints get when their payload names none."""
    return list(db.session.execute(
        select(NotificationService).where(NotificationService.is_default.is_(True))
        .order_by(NotificationService.id)
    ).scalars())


def resolve_services(service_ids: Any, *, known: dict[int, NotificationService] | None = None
                     ) -> list[NotificationService]:
    """The services with these ids, or ``InvalidNotificationService`` naming
    ``notificationServiceIds`` when one does not exist. ``known``: every
    service by id, read once by a caller that resolves many lists."""
    if not isinstance(service_ids, (list, tuple, set)) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in service_ids
    ):
        raise InvalidNotificationService({"notificationServiceIds": "must be a list of service ids"})
    wanted = set(service_ids)
    if not wanted:
        return []
    if known is None:
        found = list(db.session.execute(
            select(NotificationService).where(NotificationService.id.in_(wanted)).order_by(NotificationService.id)
        ).scalars())
    else:
        found = sorted((known[i] for i in wanted if i in known), key=lambda service: service.id)
    missing = wanted - {service.id for service in found}
    if missing:
        raise InvalidNotificationService({
            "notificationServiceIds": "no notification service with id " + ", ".join(map(str, sorted(missing)))
        })
    return found


def set_endpoint_services(endpoint, service_ids) -> None:
    """Alert the endpoint's status changes through exactly these services."""
    endpoint.notification_services = resolve_services(service_ids)
    db.session.commit()
    logger.info("endpoint %s (%s) notifies services %s", endpoint.id, endpoint.name,
                sorted(s.id for s in endpoint.notification_services))


def send_test(service_id: int) -> NotificationDelivery:
    """Send a test message now and record it as a delivery.

    Returns the delivery: ``status`` is ``sent`` or ``failed`` with the
    reason in ``last_error``. Raises ``LookupError`` for an unknown service.
    Disabled services can be tested too.
    """
    service = get_service(service_id)
    if service is None:
        raise LookupError(f"no notification service with id {service_id}")
    now = utcnow()
    message = AlertMessage(
        event=EVENT_TEST, endpoint_id=None, endpoint_name=f"Test notification for {service.name}",
        target="", check_type="", status="TEST", previous_status=None, occurred_at=now,
        **instance_fields(),
    )
    delivery = NotificationDelivery(
        notification_service_id=service.id, endpoint_id=None, event=EVENT_TEST,
        dedupe_key=f"test:{uuid.uuid4()}", payload=message.to_payload(), attempts=1,
        claimed_at=now, created_at=now,
    )
    try:
        notifier_for(service.kind, service.config or {}).send(message)
    except DeliveryError as exc:
        delivery.status, delivery.last_error = DELIVERY_FAILED, exc.reason
    except Exception as exc:  # a test must report, not crash the page
        logger.exception("test notification through service %s raised", service.id)
        delivery.status, delivery.last_error = DELIVERY_FAILED, f"unexpected error: {exc}"
    else:
        delivery.status, delivery.sent_at = DELIVERY_SENT, utcnow()
    db.session.add(delivery)
    db.session.commit()
    logger.info("test notification through service %s (%s): %s%s", service.id, service.name,
                delivery.status, f" ({delivery.last_error})" if delivery.last_error else "")
    return delivery


# --- what the JSON API answers ---------------------------------------------------

class ServiceAnswer(Answer):
    """A notification service as ``public_view`` shows it: secrets masked."""

    id: int
    name: str
    kind: str
    kind_label: str
    config: dict[str, Any]
    secrets_set: list[str]
    is_enabled: bool
    is_default: bool
    endpoint_count: int
    created_at: datetime | None
    updated_at: datetime | None


class ServiceListAnswer(Answer):
    notification_services: list[ServiceAnswer]


class TestRequest(BaseModel):
    """The body of a test notification: ``{}``."""

    model_config = ConfigDict(extra="forbid")


class DeliveryAnswer(Answer):
    """A delivery of an alert (or a test) through one service."""

    id: int
    service_id: int | None
    service_name: str | None
    endpoint_id: int | None
    endpoint_name: str | None
    event: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime | None
    sent_at: datetime | None
