"""Every service apprise supports (email, Slack, Discord, Teams, Telegram,
ntfy, Gotify, PagerDuty, ...) through one apprise URL.

apprise is imported where a URL is checked or an alert sent, never with the
app: processes that do neither do not load it."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    import apprise

logger = logging.getLogger(__name__)

# apprise.NotifyType members, by name.
_NOTIFY_TYPES = {
    EVENT_DOWN: "FAILURE",
    EVENT_REMINDER: "WARNING",
    EVENT_UP: "SUCCESS",
    EVENT_PARTIAL: "WARNING",
    EVENT_CERT_EXPIRING: "WARNING",
    EVENT_CERT_RENEWED: "SUCCESS",
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
        import apprise

        if "://" not in value:
            raise ValueError("must be an apprise URL such as mailto://... or slack://...")
        if apprise.Apprise.instantiate(value, asset=_asset()) is None:
            scheme = value.split("://", 1)[0]
            raise ValueError(f"is not a valid apprise URL for the {scheme!r} service "
                             "(see apprise's list of supported services)")
        return value


def _asset() -> apprise.AppriseAsset:
    import apprise

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
        import apprise

        notifier = apprise.Apprise(asset=_asset())
        if not notifier.add(self.config.url):
            raise DeliveryError("apprise could not load the service URL", retryable=False)
        result = notifier.notify(
            body=message.body(),
            title=message.title(),
            notify_type=apprise.NotifyType[_NOTIFY_TYPES.get(message.event, "INFO")],
            body_format=apprise.NotifyFormat.TEXT,
            timeout=self.config.timeout_seconds,
        )
        if result:
            return
        problems = [entry.message for entry in result.logs() if entry.level in {"WARNING", "ERROR", "CRITICAL"}]
        status = getattr(getattr(result, "status", None), "name", "FAILURE").lower()
        reason = "; ".join(dict.fromkeys(problems)) or f"apprise reported {status}"
        raise DeliveryError(reason[:1000], retryable=True)
