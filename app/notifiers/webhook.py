"""A plain JSON webhook: ``AlertMessage.to_payload()`` POSTed to a URL.

The payload is documented in docs/notifications.md.
"""
from __future__ import annotations

import json
import logging
import re
from urllib.parse import urlsplit

import requests
from pydantic import Field, field_validator
from pydantic.alias_generators import to_camel

from app.notifiers.base import SECRET_MASK, AlertMessage, DeliveryError, Notifier, NotifierConfig

logger = logging.getLogger(__name__)

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
USER_AGENT = "endpoint-monitor-webhook/1"


class Config(NotifierConfig):
    model_config = NotifierConfig.model_config | {"alias_generator": to_camel, "populate_by_name": True}

    url: str = Field(min_length=1, max_length=2048)
    # Extra request headers, e.g. {"Authorization": "Bearer ..."}. Secret.
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"}:
            raise ValueError("must be a URL starting with http:// or https://")
        if not parts.hostname:
            raise ValueError("has no host name")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if "\r" in header or "\n" in header:
                raise ValueError(f"the value of {name!r} must be one line")
        return value


class WebhookNotifier(Notifier):
    kind = "webhook"
    label = "Webhook (JSON POST)"
    config_model = Config
    # The URL's path and query often carry a token; headers carry credentials.
    secret_fields = frozenset({"url", "headers"})

    @classmethod
    def mask(cls, key, value):
        if key == "url" and isinstance(value, str):
            return f"{_origin(value)}/{SECRET_MASK}"
        return super().mask(key, value)

    def send(self, message: AlertMessage) -> None:
        """POST the payload; 2xx is delivered, anything else a ``DeliveryError``."""
        config = self.config
        where = _origin(config.url)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **config.headers}
        try:
            response = requests.post(config.url, data=json.dumps(message.to_payload()), headers=headers,
                                     timeout=config.timeout_seconds, allow_redirects=False)
        except requests.Timeout:
            raise DeliveryError(f"{where} did not answer within {config.timeout_seconds:g} s",
                                retryable=True) from None
        except requests.ConnectionError as exc:
            raise DeliveryError(f"could not connect to {where}: {_root_cause(exc)}", retryable=True) from None
        except requests.RequestException as exc:
            raise DeliveryError(f"request to {where} failed: {_root_cause(exc)}", retryable=True) from None
        with response:
            if 200 <= response.status_code < 300:
                return
            detail = response.text[:200].strip() if response.content else ""
            reason = f"{where} answered HTTP {response.status_code} {response.reason or ''}".rstrip()
            if detail:
                reason += f": {detail}"
            # Server trouble and rate limits pass; other refusals (bad token,
            # gone, redirect) will be the same next time.
            retryable = response.status_code >= 500 or response.status_code in {408, 429}
            raise DeliveryError(reason, retryable=retryable)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}"


def _root_cause(exc: BaseException) -> str:
    # requests nests urllib3 errors whose text repeats the full URL (and so
    # any token in it); the innermost cause says what went wrong.
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    text = str(exc)
    return text.split(": ", 1)[-1] if "object at 0x" in text else text
