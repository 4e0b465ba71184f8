"""The notifier interface and the alert message every notifier sends.

A notifier kind is one module with a ``Config`` model (validated settings;
some of them secret) and a ``Notifier`` subclass whose ``send`` either
returns or raises ``DeliveryError`` saying whether trying again can help.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

EVENT_DOWN = "down"
EVENT_UP = "up"
EVENT_REMINDER = "reminder"
EVENT_TEST = "test"
# Some locations see it DOWN, not enough for the consensus (per endpoint, off by default).
EVENT_PARTIAL = "partial"
# An HTTPS certificate has fewer days left than the endpoint's certExpiryDays; renewed again.
EVENT_CERT_EXPIRING = "cert_expiring"
EVENT_CERT_RENEWED = "cert_renewed"
# A cluster transition (a new primary); ``endpoint_name`` carries the headline.
EVENT_CLUSTER = "cluster"
EVENTS = (EVENT_DOWN, EVENT_UP, EVENT_REMINDER, EVENT_TEST, EVENT_PARTIAL, EVENT_CERT_EXPIRING,
          EVENT_CERT_RENEWED, EVENT_CLUSTER)

# Shown instead of a secret value; sent back unchanged, it means "keep it".
SECRET_MASK = "••••••"


class DeliveryError(Exception):
    """A message was not delivered; ``retryable`` says whether a later try can help."""

    def __init__(self, reason: str, *, retryable: bool):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class NotifierConfig(BaseModel):
    """Base of each kind's settings model: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


@dataclass(frozen=True)
class AlertMessage:
    """What happened to an endpoint, as every notifier is told it.

    ``to_payload`` is the JSON the webhook notifier posts (documented in
    docs/notifications.md); the same dict is stored on the delivery row, so
    a retry sends exactly what the first try would have.
    """

    event: str
    endpoint_id: int | None
    endpoint_name: str
    target: str
    check_type: str
    status: str
    previous_status: str | None
    occurred_at: datetime
    reason: str | None = None
    down_since: datetime | None = None
    duration_seconds: float | None = None
    instance_id: str = ""
    instance_name: str = ""
    location: str = ""
    # Certificate alerts: when the certificate expires, and its days left.
    certificate_expires_at: datetime | None = None
    certificate_days_left: int | None = None

    # --- text for people ---------------------------------------------------

    def title(self) -> str:
        name = self.endpoint_name
        if self.event == EVENT_DOWN:
            return f"[DOWN] {name}"
        if self.event == EVENT_UP:
            suffix = f" after {format_duration(self.duration_seconds)}" if self.duration_seconds is not None else ""
            return f"[UP] {name} is back up{suffix}"
        if self.event == EVENT_REMINDER:
            return f"[STILL DOWN] {name} for {format_duration(self.duration_seconds or 0)}"
        if self.event == EVENT_PARTIAL:
            return f"[PARTIAL] {name}"
        if self.event == EVENT_CERT_EXPIRING:
            return f"[CERTIFICATE] {name}: expires in {self.certificate_days_left} days"
        if self.event == EVENT_CERT_RENEWED:
            return f"[CERTIFICATE RENEWED] {name}"
        if self.event == EVENT_CLUSTER:
            return f"[CLUSTER] {name}"
        return f"[TEST] {name}"

    def body(self) -> str:
        where = f"{self.location} ({self.instance_name})" if self.instance_name else self.location
        lines = []
        if self.event == EVENT_TEST:
            lines.append("This is a test notification from the endpoint monitor. Delivery works.")
        elif self.event == EVENT_CLUSTER:
            lines.append(f"{self.endpoint_name}.")
            if self.reason:
                lines.append(self.reason)
        elif self.event == EVENT_PARTIAL:
            lines.append(f"{self.endpoint_name} ({self.target}) fails from some locations, not enough "
                         "to call it DOWN.")
            lines.append(f"Seen: {self.reason or 'unknown'}")
        elif self.event in (EVENT_CERT_EXPIRING, EVENT_CERT_RENEWED):
            expires = self.certificate_expires_at.isoformat() if self.certificate_expires_at else "unknown"
            if self.event == EVENT_CERT_EXPIRING:
                lines.append(f"The certificate of {self.endpoint_name} ({self.target}) expires in "
                             f"{self.certificate_days_left} days, at {expires}.")
            else:
                lines.append(f"The certificate of {self.endpoint_name} ({self.target}) was renewed; it now "
                             f"expires at {expires} ({self.certificate_days_left} days).")
        elif self.event == EVENT_UP:
            lines.append(f"{self.endpoint_name} ({self.target}) is UP again.")
            if self.duration_seconds is not None:
                lines.append(f"It was down for {format_duration(self.duration_seconds)}.")
            if self.reason:
                lines.append(f"It had been down because: {self.reason}")
        else:
            still = "still " if self.event == EVENT_REMINDER else ""
            lines.append(f"{self.endpoint_name} ({self.target}) is {still}DOWN.")
            lines.append(f"Reason: {self.reason or 'unknown'}")
            if self.event == EVENT_REMINDER and self.duration_seconds is not None:
                lines.append(f"Down for {format_duration(self.duration_seconds)}.")
        if self.down_since is not None:
            lines.append(f"Down since: {self.down_since.isoformat()}")
        lines.append(f"Checked from: {where}" if where else "")
        lines.append(f"At: {self.occurred_at.isoformat()}")
        return "\n".join(line for line in lines if line)

    # --- wire form ---------------------------------------------------------

    def to_payload(self) -> dict[str, Any]:
        """The documented JSON form (camelCase, ISO 8601 times with zone)."""
        return {
            "event": self.event,
            "endpoint": {
                "id": self.endpoint_id,
                "name": self.endpoint_name,
                "target": self.target,
                "checkType": self.check_type,
            },
            "status": self.status,
            "previousStatus": self.previous_status,
            "reason": self.reason,
            "downSince": _iso(self.down_since),
            "durationSeconds": self.duration_seconds,
            "occurredAt": _iso(self.occurred_at),
            "instance": {"id": self.instance_id, "name": self.instance_name, "location": self.location},
            **({"certificate": {"expiresAt": _iso(self.certificate_expires_at),
                                "daysLeft": self.certificate_days_left}}
               if self.event in (EVENT_CERT_EXPIRING, EVENT_CERT_RENEWED) else {}),
            "title": self.title(),
            "message": self.body(),
        }

    @classmethod
    def from_payload(cls, payload: dict) -> "AlertMessage":
        endpoint = payload.get("endpoint") or {}
        instance = payload.get("instance") or {}
        return cls(
            event=payload["event"],
            endpoint_id=endpoint.get("id"),
            endpoint_name=endpoint.get("name") or "",
            target=endpoint.get("target") or "",
            check_type=endpoint.get("checkType") or "",
            status=payload.get("status") or "",
            previous_status=payload.get("previousStatus"),
            occurred_at=datetime.fromisoformat(payload["occurredAt"]),
            reason=payload.get("reason"),
            down_since=datetime.fromisoformat(payload["downSince"]) if payload.get("downSince") else None,
            duration_seconds=payload.get("durationSeconds"),
            instance_id=instance.get("id") or "",
            instance_name=instance.get("name") or "",
            location=instance.get("location") or "",
            certificate_expires_at=(datetime.fromisoformat(certificate["expiresAt"])
                                    if (certificate := payload.get("certificate") or {}).get("expiresAt") else None),
            certificate_days_left=certificate.get("daysLeft"),
        )


class Notifier:
    """One notifier kind. Subclasses set the class attributes and ``send``."""

    kind: ClassVar[str]
    label: ClassVar[str]
    config_model: ClassVar[type[NotifierConfig]]
    # Config fields never shown back once saved.
    secret_fields: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: NotifierConfig):
        self.config = config

    @classmethod
    def from_config(cls, config: dict) -> "Notifier":
        return cls(cls.config_model.model_validate(config))

    @classmethod
    def public_config(cls, config: dict) -> dict:
        """The config with every secret replaced by a mask (a hint at most)."""
        return {key: (cls.mask(key, value) if key in cls.secret_fields and value else value)
                for key, value in config.items()}

    @classmethod
    def mask(cls, key: str, value: Any) -> Any:
        """How a secret value is shown: a mask, keeping a dict's keys."""
        if isinstance(value, dict):
            return {name: SECRET_MASK for name in value}
        return SECRET_MASK

    @classmethod
    def keep_secrets(cls, stored: dict, incoming: dict) -> dict:
        """``incoming`` with omitted or masked secrets taken from ``stored``.

        Secrets are never shown back, so a form saved unchanged sends the
        mask (or nothing) where a secret was: that means "keep the old one".
        """
        merged = dict(incoming)
        for key in cls.secret_fields:
            old = stored.get(key)
            if old is None:
                continue
            new = merged.get(key)
            shown = cls.mask(key, old)
            if new is None or new == "" or new == SECRET_MASK or new == shown:
                merged[key] = old
            elif isinstance(new, dict) and isinstance(old, dict):
                merged[key] = {name: (old[name] if value == SECRET_MASK and name in old else value)
                               for name, value in new.items()}
        return merged

    def send(self, message: AlertMessage) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def format_duration(seconds: float | None) -> str:
    """``3725`` -> ``1 h 2 min``: the two largest units, for people."""
    if seconds is None:
        return "unknown"
    seconds = int(round(seconds))
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    parts = []
    for name, size in units:
        if seconds >= size or (name == "s" and not parts):
            amount, seconds = divmod(seconds, size)
            parts.append(f"{amount} {name}")
        if len(parts) == 2:
            break
    return " ".join(parts)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
