"""Endpoints (what is monitored) and their status history."""
from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.encrypted import CredentialsURL, OptionsWithSecrets
from app.models.types import UTCDateTime, utcnow

STATUS_PENDING = "PENDING"
STATUS_UP = "UP"
STATUS_DOWN = "DOWN"
# Some locations see it DOWN, but not enough for the consensus rule.
STATUS_PARTIAL = "PARTIAL"

CONSENSUS_MAJORITY = "majority"
CONSENSUS_AT_LEAST = "atLeast"

endpoint_notifications = db.Table(
    "endpoint_notifications",
    db.Column("endpoint_id", Integer, ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True),
    db.Column(
        "notification_service_id",
        Integer,
        ForeignKey("notification_services.id", ondelete="CASCADE"),
        primary_key=True,
    ),
)


class Endpoint(db.Model):
    """One monitored target and its check settings.

    Configuration columns are owned by the primary (or a standalone) and
    bump ``config_version`` when they change. The runtime columns
    (``RUNTIME_FIELDS``) are written by workers on every check and do not.
    """

    __tablename__ = "endpoints"
    # SQLite: never hand out a deleted row's id again (migration 0004).
    __table_args__ = {"sqlite_autoincrement": True}

    RUNTIME_FIELDS = frozenset({
        "status", "consecutive_failures", "consecutive_successes", "last_checked_at",
        "last_response_time_ms", "last_failure_reason", "next_check_at", "status_changed_at",
        "locations_up", "locations_down", "locations_voting", "alerted_status", "consensus_recorded_at",
        "checked_here", "certificate_alerted_expiry",
    })

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    check_type: Mapped[str] = mapped_column(String(32), nullable=False)
    # URL for http; host for tcp and ping; bootstrap servers for kafka.
    # URL credentials are encrypted at rest (a token takes more room than
    # the 2048 characters a target may have, hence the wider column).
    target: Mapped[str] = mapped_column(CredentialsURL(4096), nullable=False)
    port: Mapped[int | None] = mapped_column(Integer)
    # Type-specific options, validated by the check type's Options model;
    # secret values (SASL password, credential headers) encrypted at rest.
    options: Mapped[dict] = mapped_column(OptionsWithSecrets, nullable=False, default=dict)
    interval_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=60)
    timeout_seconds: Mapped[float] = mapped_column(Float, nullable=False, default=10.0)
    # Consecutive failures before DOWN, consecutive successes before UP again.
    failure_threshold: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    success_threshold: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    is_paused: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    group_name: Mapped[str | None] = mapped_column(String(100))
    # While DOWN, remind the endpoint's notification services this often (none: never).
    reminder_interval_minutes: Mapped[int | None] = mapped_column(Integer)
    # Which instances check it: a list of instance ids, or None for all.
    location_ids: Mapped[list | None] = mapped_column(JSON)
    # DOWN when more than half the voting locations see it DOWN (majority),
    # or at least consensus_min_down of them (atLeast).
    consensus_rule: Mapped[str] = mapped_column(String(16), nullable=False, default=CONSENSUS_MAJORITY)
    consensus_min_down: Mapped[int | None] = mapped_column(Integer)
    alert_on_partial: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # Alert once when an HTTPS certificate has fewer days left than this.
    cert_expiry_days: Mapped[int] = mapped_column(Integer, nullable=False, default=14)
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    status: Mapped[str] = mapped_column(String(16), nullable=False, default=STATUS_PENDING)
    status_changed_at = mapped_column(UTCDateTime)
    consecutive_failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    consecutive_successes: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_checked_at = mapped_column(UTCDateTime)
    last_response_time_ms: Mapped[float | None] = mapped_column(Float)
    last_failure_reason: Mapped[str | None] = mapped_column(Text)
    # Unix time (seconds) the next check is due; float keeps the clock's
    # arithmetic identical on SQLite and PostgreSQL.
    next_check_at: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, index=True)
    # Whether this instance is one of the locations that check it.
    checked_here: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # The consensus behind ``status`` (on a standalone or dependent, of its
    # one location): voting locations and how many of them see it UP / DOWN.
    locations_voting: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    locations_up: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    locations_down: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # The last consensus status alerted (DOWN, PARTIAL, UP; None: none yet),
    # so DOWN -> PARTIAL -> DOWN pages once and recovery once.
    alerted_status: Mapped[str | None] = mapped_column(String(16))
    # When the newest aggregated_results row was written (the cadence).
    consensus_recorded_at = mapped_column(UTCDateTime)
    # validTo of the certificate an expiry alert was raised for.
    certificate_alerted_expiry = mapped_column(UTCDateTime)

    # selectin: to_dict lists the ids, and a page of endpoints is one more query, not one per row.
    notification_services = relationship(
        "NotificationService", secondary=endpoint_notifications, back_populates="endpoints",
        lazy="selectin",
    )

    def to_dict(self) -> dict:
        """The endpoint for API answers: the target without credentials, secret
        options and headers masked (sending them back keeps the stored ones)."""
        from app.checks import public_options, public_target

        return {
            "id": self.id,
            "name": self.name,
            "checkType": self.check_type,
            "target": public_target(self.target),
            "port": self.port,
            "options": public_options(self.options),
            "intervalSeconds": self.interval_seconds,
            "timeoutSeconds": self.timeout_seconds,
            "failureThreshold": self.failure_threshold,
            "successThreshold": self.success_threshold,
            "isPaused": self.is_paused,
            "group": self.group_name,
            "reminderIntervalMinutes": self.reminder_interval_minutes,
            "locations": self.location_ids,
            "consensusRule": consensus_rule_text(self.consensus_rule, self.consensus_min_down),
            "alertOnPartial": self.alert_on_partial,
            "certExpiryDays": self.cert_expiry_days,
            "notificationServiceIds": sorted(service.id for service in self.notification_services),
            "status": self.status,
            "statusChangedAt": _iso(self.status_changed_at),
            "lastCheckedAt": _iso(self.last_checked_at),
            "lastResponseTimeMs": self.last_response_time_ms,
            "lastFailureReason": self.last_failure_reason,
            "createdAt": _iso(self.created_at),
            "updatedAt": _iso(self.updated_at),
        }


class StatusChange(db.Model):
    """A change of an endpoint's status (the start or end of an incident)."""

    __tablename__ = "status_changes"
    __table_args__ = (
        Index("ix_status_changes_endpoint_changed", "endpoint_id", "changed_at"),
        Index("ix_status_changes_changed", "changed_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False)
    from_status: Mapped[str] = mapped_column(String(16), nullable=False)
    to_status: Mapped[str] = mapped_column(String(16), nullable=False)
    changed_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text)
    # The alert this change raises (down, up, partial), decided with the
    # change itself; None: it alerts nobody.
    alert_event: Mapped[str | None] = mapped_column(String(16))
    # The alert a maintenance window held back (down, up, partial), and
    # which window: such a change alerts nobody (alert_event is None).
    suppressed_alert: Mapped[str | None] = mapped_column(String(16))
    suppressed_by: Mapped[str | None] = mapped_column(Text)


def consensus_rule_text(rule: str, min_down: int | None) -> str:
    """The rule as the API writes it: ``majority`` or ``atLeast:N``."""
    return f"{CONSENSUS_AT_LEAST}:{min_down}" if rule == CONSENSUS_AT_LEAST else CONSENSUS_MAJORITY


def _iso(value):
    return value.isoformat() if value is not None else None
