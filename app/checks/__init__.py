"""Check types: one module each, behind one registry.

A check module defines ``Options`` (a ``CheckOptions`` pydantic model of its
type-specific settings) and ``check(spec: CheckSpec) -> CheckResult``, a pure
function that touches no database. Adding a type is one new module and one
line in ``CHECK_TYPES``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from urllib.parse import urlsplit, urlunsplit

from app.checks import http, kafka_consumer, kafka_producer, ping, tcp
from app.checks.base import CheckFailed, CheckOptions, CheckResult, CheckSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckType:
    name: str
    label: str
    module: ModuleType
    # What ``Endpoint.target`` means for this type, for forms and errors.
    target_label: str
    needs_port: bool = False

    @property
    def options_model(self) -> type[CheckOptions]:
        return self.module.Options


CHECK_TYPES: dict[str, CheckType] = {
    t.name: t
    for t in (
        CheckType("http", "HTTP(S)", http, "URL"),
        CheckType("tcp", "TCP port", tcp, "host", needs_port=True),
        CheckType("ping", "ICMP ping", ping, "host"),
        CheckType("kafka_producer", "Kafka producer", kafka_producer, "bootstrap servers"),
        CheckType("kafka_consumer", "Kafka consumer", kafka_consumer, "bootstrap servers"),
    )
}


# Options that hold secrets: never shown back, logged or sent in alerts.
SECRET_OPTIONS = frozenset({"sasl_password"})
# Request headers (the ``headers`` option) whose values are secrets: the
# credential headers, and any whose name says it holds a secret
# (X-Api-Key, X-Auth-Token, X-Secret...).
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
SECRET_HEADER_WORDS = ("token", "secret", "key", "password")
MASK = "********"


def is_secret_header(name: str) -> bool:
    """Whether the value of request header ``name`` is a secret (any case)."""
    name = name.lower()
    return name in SECRET_HEADERS or any(word in name for word in SECRET_HEADER_WORDS)


def public_options(options: dict) -> dict:
    """Options with secret values masked, for API answers and pages."""
    shown = {k: (MASK if k in SECRET_OPTIONS and v else v) for k, v in (options or {}).items()}
    if isinstance(shown.get("headers"), dict):
        shown["headers"] = {name: (MASK if value and is_secret_header(name) else value)
                            for name, value in shown["headers"].items()}
    return shown


def public_target(target: str) -> str:
    """The target without credentials (``user:password@`` in a URL), for
    logs, pages and alerts."""
    if "@" not in target or "://" not in target:
        return target
    try:
        parts = urlsplit(target)
        if parts.username is None and parts.password is None:
            return target
        host = parts.hostname or ""
        netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return target.split("://", 1)[0] + "://(unparseable URL)"
    return urlunsplit(parts._replace(netloc=netloc))


def run_check(check_type: str, target: str, port: int | None, timeout: float, options: dict, *,
              location: str | None = None) -> CheckResult:
    """Run one check from ``location``; any exception becomes a DOWN result with its reason."""
    kind = CHECK_TYPES.get(check_type)
    if kind is None:
        return CheckResult(is_ok=False, check_type=check_type,
                           failure_reason=f"unknown check type {check_type!r}")
    try:
        spec = CheckSpec(target=target, port=port, timeout=float(timeout),
                         options=kind.options_model.model_validate(options or {}), location=location)
        return kind.module.check(spec)
    except CheckFailed as exc:
        return CheckResult(is_ok=False, check_type=check_type, failure_reason=str(exc),
                           metadata=exc.metadata)
    except Exception as exc:  # a check must never crash the job running it
        logger.warning("%s check of %s raised", check_type, public_target(target), exc_info=True)
        return CheckResult(is_ok=False, check_type=check_type,
                           failure_reason=f"{type(exc).__name__}: {exc}")


__all__ = ["CHECK_TYPES", "MASK", "SECRET_HEADERS", "SECRET_OPTIONS", "is_secret_header", "public_options",
           "public_target", "CheckFailed", "CheckOptions", "CheckResult", "CheckSpec", "CheckType", "run_check"]
