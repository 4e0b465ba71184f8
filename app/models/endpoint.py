"""Endpoints (what is monitored) and their status history."""
from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.types import UTCDateTime, utcnow

STATUS_PENDING = "PENDING"
STATUS_UP = "UP"
STATUS_DOWN = "DOWN"

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
    })

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    check_type: Mapped[str] = mapped_column(String(32), nullable=False)
    # URL for http; host for tcp and ping; bootstrap servers for kafka.
    target: Mapped[str] = mapped_column(String(2048), nullable=False)
    port: Mapped[int | None] = mapped_column(Integer)
    # Type-specific options, validated by the check type's Options model.
    options: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    interval_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=60)
    timeout_seconds: Mapped[float] = mapped_column(Float, nullable=False, default=10.0)
    # Consecutive failures before DOWN, consecutive successes before UP again.
    failure_threshold: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    success_threshold: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    is_paused: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    group_name: Mapped[str | None] = mapped_column(String(100))
    # While DOWN, remind the endpoint's notification services this often (none: never).
    reminder_interval_minutes: Mapped[int | None] = mapped_column(Integer)
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


def _iso(value):
    return value.isoformat() if value is not None else None
