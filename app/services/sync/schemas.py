"""Sync payloads on the wire (camelCase), validated strictly.

Unknown fields, wrong types and out-of-range values are errors that name the
field; nothing is stored from a payload that fails here.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from app.services.results import MAX_REASON_LENGTH  # noqa: E402

MAX_RESULTS_PER_HEARTBEAT = 1000
BIGINT = 2**63 - 1  # the largest integer the databases store
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
# A result from the future is a wrong clock; a little skew between hosts is not.
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_METADATA_KEYS = 50


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              strict=False, str_max_length=10_000)


class InstanceRegistration(WireModel):
    """A dependent introducing itself to the primary."""

    instance_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    instance_name: str = Field(min_length=1, max_length=100)
    location: str = Field(min_length=1, max_length=100)
    sync_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    failover_order: int = Field(default=0, ge=0, le=10_000)
    heartbeat_interval: int = Field(default=10, ge=1, le=3600)
    version: str | None = Field(default=None, max_length=32)
    epoch: int = Field(default=0, ge=0, le=BIGINT)


class MonitoringResult(WireModel):
    """One check result as a dependent sends it."""

    result_id: str = Field(min_length=36, max_length=36,
                           pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    endpoint_id: int = Field(ge=1, le=BIGINT)
    is_ok: bool
    response_time: float | None = Field(default=None, ge=0, le=3_600_000)
    status: Literal["UP", "DOWN"]
    failure_reason: str | None = Field(default=None, max_length=MAX_REASON_LENGTH)
    check_type: str = Field(min_length=1, max_length=32)
    metadata: dict[str, Any] = Field(default_factory=dict, max_length=MAX_METADATA_KEYS)
    checked_at: AwareDatetime

    @field_validator("checked_at")
    @classmethod
    def _plausible_time(cls, value):
        # Far-off years overflow on conversion to UTC and mean a broken clock.
        utc = value.astimezone(timezone.utc) if 1 < value.year < 9999 else None
        if utc is None or not (EARLIEST <= utc <= datetime.now(timezone.utc) + MAX_CLOCK_SKEW):
            raise ValueError(f"must be a time between 2000 and now (the dependent's clock may be "
                             f"{MAX_CLOCK_SKEW.total_seconds() / 60:g} minutes ahead of the primary's, no more)")
        return utc


class SystemInfo(WireModel):
    # Fields a newer dependent adds are dropped, not stored: nothing a
    # dependent sends lands in the primary's records unchecked.
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)

    cpu_percent: float | None = Field(default=None, ge=0, le=100 * 1024)
    memory_percent: float | None = Field(default=None, ge=0, le=100)
    disk_percent: float | None = Field(default=None, ge=0, le=100)
    load_average: list[float] | None = Field(default=None, max_length=3)
    uptime_seconds: float | None = Field(default=None, ge=0)
    version: str | None = Field(default=None, max_length=32)
    python: str | None = Field(default=None, max_length=32)


class ConnectionStatus(WireModel):
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)

    primary_reachable: bool = True
    consecutive_failures: int = Field(default=0, ge=0)
    last_success_at: AwareDatetime | None = None
    outbox_size: int = Field(default=0, ge=0)
    # The dependent's own check of CONNECTIVITY_CHECK_TARGET; None: not configured.
    connectivity_ok: bool | None = None
    connectivity_error: str | None = Field(default=None, max_length=500)
    connectivity_checked_at: AwareDatetime | None = None


class HeartbeatPayload(WireModel):
    """A dependent's periodic report: its state and results not yet acknowledged."""

    instance_id: str = Field(min_length=8, max_length=64)
    epoch: int = Field(default=0, ge=0, le=BIGINT)
    status: Literal["healthy", "degraded"] = "healthy"
    config_version: int = Field(default=0, ge=0, le=BIGINT)
    system_info: SystemInfo = Field(default_factory=SystemInfo)
    connection_status: ConnectionStatus = Field(default_factory=ConnectionStatus)
    results: list[MonitoringResult] = Field(default_factory=list, max_length=MAX_RESULTS_PER_HEARTBEAT)

    @field_validator("results", mode="before")
    @classmethod
    def _results_is_a_list(cls, value):
        # Lax mode would read a string as a list of characters.
        if not isinstance(value, list):
            raise ValueError("must be a list of results")
        return value


def validation_errors(exc: ValidationError) -> dict[str, str]:
    """Map each bad field (camelCase path) to its message."""
    errors = {}
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "body"
        errors[field] = error["msg"]
    return errors


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
