"""Sync payloads on the wire (camelCase), validated strictly.

Unknown fields, wrong types and out-of-range values are errors that name the
field; nothing is stored from a payload that fails here.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from app.services.openapi import Answer
from app.services.results import MAX_REASON_LENGTH  # noqa: E402

# Headers of the sync API: the sender's cluster epoch, the join secret.
EPOCH_HEADER = "X-Cluster-Epoch"
SECRET_HEADER = "X-Cluster-Secret"
MAX_RESULTS_PER_HEARTBEAT = 1000
BIGINT = 2**63 - 1  # the largest integer the databases store
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
# A result from the future is a wrong clock; a little skew between hosts is not.
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_METADATA_KEYS = 50


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              strict=False, str_max_length=10_000)


class PeerRequest(WireModel):
    """What a peer sends: JSON's types are taken as they are (``true`` is not
    1, ``"60"`` is not 60), as the JSON API takes them. Times come as ISO 8601
    text, so time fields take text (``strict=False`` on each)."""

    model_config = ConfigDict(strict=True)


class InstanceRegistration(PeerRequest):
    """A dependent introducing itself to the primary."""

    instance_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    instance_name: str = Field(min_length=1, max_length=100)
    location: str = Field(min_length=1, max_length=100)
    sync_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    failover_order: int = Field(default=0, ge=0, le=10_000)
    heartbeat_interval: int = Field(default=10, ge=1, le=3600)
    version: str | None = Field(default=None, max_length=32)
    epoch: int = Field(default=0, ge=0, le=BIGINT)


class MonitoringResult(PeerRequest):
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
    checked_at: AwareDatetime = Field(strict=False)
    # Set when the sender passes on another instance's result (catching a
    # new primary up after a failover); absent for the sender's own.
    instance_id: str | None = Field(default=None, min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+$")

    @field_validator("checked_at")
    @classmethod
    def _plausible_time(cls, value):
        # Far-off years overflow on conversion to UTC and mean a broken clock.
        utc = value.astimezone(timezone.utc) if 1 < value.year < 9999 else None
        if utc is None or not (EARLIEST <= utc <= datetime.now(timezone.utc) + MAX_CLOCK_SKEW):
            raise ValueError(f"must be a time between 2000 and now (the dependent's clock may be "
                             f"{MAX_CLOCK_SKEW.total_seconds() / 60:g} minutes ahead of the primary's, no more)")
        return utc


class SystemInfo(PeerRequest):
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
    # Where the instance stands on the location map (INSTANCE_LATITUDE and
    # INSTANCE_LONGITUDE), when it says. Here rather than in a field of its
    # own, because a primary of an older version ignores what it does not
    # know in systemInfo and refuses it anywhere else.
    latitude: float | None = Field(default=None, ge=-90, le=90, allow_inf_nan=False)
    longitude: float | None = Field(default=None, ge=-180, le=180, allow_inf_nan=False)

    @model_validator(mode="after")
    def _both_coordinates_or_neither(self):
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("latitude and longitude come together, or neither")
        return self


class ConnectionStatus(PeerRequest):
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)

    primary_reachable: bool = True
    consecutive_failures: int = Field(default=0, ge=0)
    last_success_at: AwareDatetime | None = Field(default=None, strict=False)
    outbox_size: int = Field(default=0, ge=0)
    # The dependent's own check of CONNECTIVITY_CHECK_TARGET; None: not configured.
    connectivity_ok: bool | None = None
    connectivity_error: str | None = Field(default=None, max_length=500)
    connectivity_checked_at: AwareDatetime | None = Field(default=None, strict=False)
    # Failed sync rounds since the member first started, and the newest
    # failure. Optional: a member of an older version does not send them.
    sync_errors: int | None = Field(default=None, ge=0, le=BIGINT)
    last_sync_error: str | None = Field(default=None, max_length=500)
    last_sync_error_at: AwareDatetime | None = Field(default=None, strict=False)


class HeartbeatPayload(PeerRequest):
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


class VoteRequest(PeerRequest):
    """A candidate asking for this instance's vote for ``epoch``."""

    candidate_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    epoch: int = Field(ge=1, le=BIGINT)
    sync_url: str = Field(max_length=2048, pattern=r"^https?://")


class PrimaryAnnouncement(PeerRequest):
    """A new primary telling a member whom to follow from ``epoch`` on."""

    primary_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    epoch: int = Field(ge=1, le=BIGINT)
    sync_url: str = Field(max_length=2048, pattern=r"^https?://")


class HandoverRequest(PeerRequest):
    """An instance asking the primary to hand over to it (manual promotion)."""

    candidate_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+$")


def validation_errors(exc: ValidationError) -> dict[str, str]:
    """Map each bad field (camelCase path) to its message."""
    errors = {}
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "body"
        errors[field] = error["msg"]
    return errors


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- replication to failover candidates ----------------------------------------
# What a candidate (failover order above 0) receives so that it can take over:
# the configuration with secrets, accounts and membership with each
# configuration pull (``replica``), and ongoing incidents with each heartbeat
# reply (``incidents``). Ids are the primary's, kept as they are.

INT32 = 2**31 - 1  # the largest id an INTEGER column stores
MAX_REPLICATED_ROWS = 100_000
MAX_OPEN_DELIVERIES = 200


class ReplicatedService(WireModel):
    """A notification service with its secrets."""

    id: int = Field(ge=1, le=INT32)
    name: str = Field(min_length=1, max_length=200)
    kind: str = Field(min_length=1, max_length=32)
    config: dict[str, Any]
    is_enabled: bool
    is_default: bool
    created_at: AwareDatetime


class ReplicatedLink(WireModel):
    """One endpoint alerting through one notification service."""

    endpoint_id: int = Field(ge=1, le=INT32)
    notification_service_id: int = Field(ge=1, le=INT32)


class ReplicatedUser(WireModel):
    id: int = Field(ge=1, le=INT32)
    email: str = Field(min_length=3, max_length=254)
    password_hash: str = Field(min_length=1, max_length=255)
    is_admin: bool
    created_at: AwareDatetime


class ReplicatedApiKey(WireModel):
    """An API key as stored: its hash, never the key."""

    id: int = Field(ge=1, le=INT32)
    user_id: int = Field(ge=1, le=INT32)
    name: str = Field(min_length=1, max_length=100)
    prefix: str = Field(min_length=1, max_length=16)
    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: AwareDatetime
    revoked_at: AwareDatetime | None = None


class ReplicatedSetting(WireModel):
    key: str = Field(min_length=1, max_length=64)
    value: Any

    @field_validator("value")
    @classmethod
    def _present(cls, value):
        if value is None:
            raise ValueError("must be a JSON value, not null")
        return value


class ReplicatedInstance(WireModel):
    """A member of the cluster as the primary's registry holds it."""

    instance_id: str = Field(min_length=1, max_length=64)
    instance_name: str = Field(min_length=1, max_length=100)
    location: str = Field(min_length=1, max_length=100)
    sync_url: str | None = Field(default=None, max_length=2048)
    role: str = Field(min_length=1, max_length=16)
    failover_order: int = Field(ge=0, le=10_000)
    status: str = Field(min_length=1, max_length=16)
    version: str | None = Field(default=None, max_length=32)
    registered_at: AwareDatetime


class Replica(WireModel):
    """Everything besides endpoints that a candidate needs to act as primary."""

    notification_services: list[ReplicatedService] = Field(max_length=MAX_REPLICATED_ROWS)
    endpoint_notifications: list[ReplicatedLink] = Field(max_length=MAX_REPLICATED_ROWS)
    users: list[ReplicatedUser] = Field(max_length=MAX_REPLICATED_ROWS)
    api_keys: list[ReplicatedApiKey] = Field(max_length=MAX_REPLICATED_ROWS)
    settings: list[ReplicatedSetting] = Field(max_length=MAX_REPLICATED_ROWS)
    instances: list[ReplicatedInstance] = Field(max_length=MAX_REPLICATED_ROWS)


class Membership(WireModel):
    """The membership alone, as a member that is no candidate receives it."""

    instances: list[ReplicatedInstance] = Field(max_length=MAX_REPLICATED_ROWS)


class ReplicatedMaintenanceWindow(WireModel):
    """A maintenance window as the primary holds it; every member gets them
    (a promoted candidate must keep holding alerts back, and dependents mark
    the endpoints in maintenance). The primary validated it; this checks shape."""

    id: int = Field(ge=1, le=INT32)
    title: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    cron_expression: str | None = Field(default=None, max_length=100)
    time_zone: str | None = Field(default=None, max_length=64)
    duration_minutes: int | None = Field(default=None, ge=1, le=INT32)
    endpoint_ids: list[int] = Field(max_length=MAX_REPLICATED_ROWS)
    groups: list[str] = Field(max_length=MAX_REPLICATED_ROWS)
    is_active: bool
    created_at: AwareDatetime


class MaintenanceWindows(WireModel):
    maintenance_windows: list[ReplicatedMaintenanceWindow] = Field(max_length=MAX_REPLICATED_ROWS)


class OpenDelivery(WireModel):
    """An alert the primary has raised and not yet sent."""

    dedupe_key: str = Field(min_length=1, max_length=128)
    notification_service_id: int = Field(ge=1, le=INT32)
    endpoint_id: int | None = Field(default=None, ge=1, le=INT32)
    event: str = Field(min_length=1, max_length=16)
    payload: dict[str, Any]
    created_at: AwareDatetime


class Incidents(WireModel):
    """Ongoing incidents: the status alerted for each endpoint not UP, and
    the alerts still to be sent."""

    alerted: dict[int, Literal["DOWN", "PARTIAL"]] = Field(max_length=MAX_REPLICATED_ROWS)
    open_deliveries: list[OpenDelivery] = Field(max_length=MAX_OPEN_DELIVERIES)


# --- what the sync API answers ---------------------------------------------------
# Described in its OpenAPI document (app/blueprints/sync_api/openapi.py).

class HealthAnswer(Answer):
    """Liveness for peers: who this is and whom it follows."""

    status: Literal["ok"]
    instance_id: str
    instance_name: str
    location: str
    role: str
    epoch: int
    primary_url: str | None
    version: str


class ProbeAnswer(Answer):
    status: Literal["ok"]


class StatusAnswer(Answer):
    """Who this instance is and whom it follows, for peers finding the primary."""

    instance_id: str
    instance_name: str
    location: str
    role: str
    epoch: int
    sync_url: str
    primary_url: str | None
    primary_id: str | None
    failover_order: int
    config_version: int
    version: str


class RegistrationReply(Answer):
    """A registered instance's token, and what it needs to begin."""

    instance_id: str
    token: str
    token_expires_at: datetime
    config_version: int
    epoch: int
    primary_id: str
    heartbeat_interval: int
    # The newest result held from each member, by instance id.
    holds: dict[str, str]


class RejectedResult(Answer):
    result_id: str
    reason: str


class HeartbeatReply(Answer):
    """Results acknowledged (stored now or before) and rejected; a renewed
    token when the old one nears expiry; incidents for a candidate."""

    acknowledged: list[str]
    rejected: list[RejectedResult]
    config_version: int
    epoch: int
    incidents: Incidents | None = None
    token: str | None = None
    token_expires_at: datetime | None = None


class InstanceAnswer(Answer):
    """A member of the cluster as the primary's registry holds it."""

    instance_id: str
    instance_name: str
    location: str
    sync_url: str | None
    role: str
    failover_order: int
    status: str
    version: str | None
    last_heartbeat_at: datetime | None
    registered_at: datetime | None
    config_version: int | None
    system_info: dict[str, Any]
    connection_info: dict[str, Any]


class InstancesAnswer(Answer):
    instances: list[InstanceAnswer]
    epoch: int


class EndpointConfig(Answer):
    """An endpoint's configuration, without the primary's runtime state."""

    id: int
    name: str
    check_type: str
    target: str
    port: int | None
    options: dict[str, Any]
    interval_seconds: int
    timeout_seconds: float | None
    failure_threshold: int
    success_threshold: int
    is_paused: bool
    group: str | None
    reminder_interval_minutes: int | None
    locations: list[str] | None
    consensus_rule: str
    alert_on_partial: bool
    cert_expiry_days: int


class SyncConfiguration(Answer):
    """What the asking instance checks; a candidate also gets ``replica``,
    any other member ``members``."""

    config_version: int
    epoch: int
    generated_at: datetime
    endpoints: list[EndpointConfig]
    replica: Replica | None = None
    members: Membership | None = None
    # Every registered member gets the windows (an unregistered asker does not).
    maintenance_windows: list[ReplicatedMaintenanceWindow] | None = None


class ServiceName(Answer):
    id: int
    name: str
    kind: str
    is_enabled: bool
    is_default: bool


class ServiceNamesAnswer(Answer):
    """Notification services without their secrets (only the primary alerts)."""

    notification_services: list[ServiceName]
    config_version: int


class FailoverPlace(Answer):
    instance_id: str
    instance_name: str
    location: str
    sync_url: str | None
    failover_order: int
    status: str
    role: str


class FailoverOrderAnswer(Answer):
    failover_order: list[FailoverPlace]
    epoch: int


class VoteAnswer(Answer):
    """Whether the vote was granted, and if not why."""

    epoch: int
    primary_url: str | None
    granted: bool
    reason: str | None = None
    voted_epoch: int | None = None
    voted_for: str | None = None


class AnnouncementAnswer(Answer):
    followed: bool
    epoch: int


class HandoverAnswer(Answer):
    handed_over: bool
    epoch: int
    candidate_id: str


class ElectionAnswer(Answer):
    """The outcome of the election a handed-over candidate ran."""

    elected: bool
    epoch: int
    election: int | None = None
    outcome: str | None = None


class PromotionAnswer(Answer):
    """The epoch and primary after a promotion or demotion."""

    epoch: int | None
    primary_id: str
