"""Notifier kinds: one module each, behind one registry.

A kind is a ``Notifier`` subclass with a pydantic ``Config`` model. Adding a
kind is one new module and one line in ``NOTIFIERS``.
"""
from __future__ import annotations

from app.notifiers.apprise import AppriseNotifier
from app.notifiers.base import (
    EVENT_CERT_EXPIRING,
    EVENT_CERT_RENEWED,
    EVENT_CLUSTER,
    EVENT_DOWN,
    EVENT_PARTIAL,
    EVENT_REMINDER,
    EVENT_TEST,
    EVENT_UP,
    EVENTS,
    SECRET_MASK,
    AlertMessage,
    DeliveryError,
    Notifier,
    NotifierConfig,
    format_duration,
)
from app.notifiers.webhook import WebhookNotifier

NOTIFIERS: dict[str, type[Notifier]] = {cls.kind: cls for cls in (AppriseNotifier, WebhookNotifier)}


def notifier_for(kind: str, config: dict) -> Notifier:
    """A ready notifier for a stored service; raises ``DeliveryError`` if it cannot be made."""
    cls = NOTIFIERS.get(kind)
    if cls is None:
        raise DeliveryError(f"unknown notifier kind {kind!r}", retryable=False)
    try:
        return cls.from_config(config)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise DeliveryError(f"the service's settings are invalid: {_short(exc)}", retryable=False) from None


def _short(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                         for e in errors())
    return str(exc)


__all__ = [
    "EVENTS", "EVENT_CERT_EXPIRING", "EVENT_CERT_RENEWED", "EVENT_CLUSTER", "EVENT_DOWN", "EVENT_PARTIAL", "EVENT_REMINDER", "EVENT_TEST", "EVENT_UP", "NOTIFIERS", "SECRET_MASK",
    "AlertMessage", "AppriseNotifier", "DeliveryError", "Notifier", "NotifierConfig", "WebhookNotifier",
    "format_duration", "notifier_for",
]
