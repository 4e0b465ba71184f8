"""Every service apprise supports (email, Slack, Discord, Teams, Telegram,
ntfy, Gotify, PagerDuty, ...) through one apprise URL."""
from __future__ import annotations

import logging

import apprise
from pydantic import Field, field_validator
from pydantic.alias_generators import to_camel

from app.notifiers.base import (
    EVENT_CERT_EXPIRING,
    EVENT_CERT_RENEWED,
    EVENT_DOWN,
    EVENT_PARTIAL,
    EVENT_REMINDER,
    EVENT_UP,
    SECRET_MASK,
    AlertMessage,
    DeliveryError,
    Notifier,
    NotifierConfig,
)

logger = logging.getLogger(__name__)

_NOTIFY_TYPES = {
    EVENT_DOWN: apprise.NotifyType.FAILURE,
    EVENT_REMINDER: apprise.NotifyType.WARNING,
    EVENT_UP: apprise.NotifyType.SUCCESS,
    EVENT_PARTIAL: apprise.NotifyType.WARNING,
    EVENT_CERT_EXPIRING: apprise.NotifyType.WARNING,
    EVENT_CERT_RENEWED: apprise.NotifyType.SUCCESS,
}


class Config(NotifierConfig):
    model_config = NotifierConfig.model_config | {"alias_generator": to_camel, "populate_by_name": True}

    # An apprise URL, e.g. mailto://user:pass@example.org?to=ops@example.org,
    # slack://TokenA/TokenB/TokenC, ntfys://ntfy.sh/topic. Holds secrets.
    url: str = Field(min_length=1, max_length=4096)
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _apprise_understands(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("must be an apprise URL such as mailto://... or slack://...")
        if apprise.Apprise.instantiate(value, asset=_asset()) is None:
            scheme = value.split("://", 1)[0]
            raise ValueError(f"is not a valid apprise URL for the {scheme!r} service "
                             "(see apprise's list of supported services)")
        return value


def _asset() -> apprise.AppriseAsset:
    # Memory-only: apprise may otherwise keep state files under the home directory.
    return apprise.AppriseAsset(storage_mode="memory", secure_logging=True)


class AppriseNotifier(Notifier):
    kind = "apprise"
    label = "Apprise (email, Slack, Discord, Teams, Telegram, ntfy, ...)"
    config_model = Config
    secret_fields = frozenset({"url"})

    @classmethod
    def mask(cls, key, value):
        # The scheme names the service, which is all a reader needs to see.
        if key == "url" and isinstance(value, str) and "://" in value:
            return f"{value.split('://', 1)[0]}://{SECRET_MASK}"
        return super().mask(key, value)

    def send(self, message: AlertMessage) -> None:
        """Send through apprise; any failure it reports is worth retrying."""
        notifier = apprise.Apprise(asset=_asset())
        if not notifier.add(self.config.url):
            raise DeliveryError("apprise could not load the service URL", retryable=False)
        result = notifier.notify(
            body=message.body(),
            title=message.title(),
            notify_type=_NOTIFY_TYPES.get(message.event, apprise.NotifyType.INFO),
            body_format=apprise.NotifyFormat.TEXT,
            timeout=self.config.timeout_seconds,
        )
        if result:
            return
        problems = [entry.message for entry in result.logs() if entry.level in {"WARNING", "ERROR", "CRITICAL"}]
        status = getattr(getattr(result, "status", None), "name", "FAILURE").lower()
        reason = "; ".join(dict.fromkeys(problems)) or f"apprise reported {status}"
        raise DeliveryError(reason[:1000], retryable=True)
