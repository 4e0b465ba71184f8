"""Notification services alerts are sent through, and each delivery to them."""
from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.encrypted import EncryptedJSON
from app.models.endpoint import endpoint_notifications
from app.models.types import UTCDateTime, utcnow


class NotificationService(db.Model):
    """A configured notifier: an apprise URL or a plain JSON webhook."""

    __tablename__ = "notification_services"
    # SQLite: never hand out a deleted row's id again (migration 0004).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    # Secrets live here (URLs with tokens); never rendered back to the UI,
    # and encrypted at rest as a whole.
    config: Mapped[dict] = mapped_column(EncryptedJSON, nullable=False, default=dict)
    is_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    endpoints = relationship(
        "Endpoint", secondary=endpoint_notifications, back_populates="notification_services"
    )


DELIVERY_PENDING = "pending"
DELIVERY_SENDING = "sending"
DELIVERY_SENT = "sent"
DELIVERY_FAILED = "failed"
# On a failover candidate: raised by the primary and not yet sent there.
# Nothing sends it; promotion makes it pending (replication.adopt_inherited_deliveries).
DELIVERY_INHERITED = "inherited"


class NotificationDelivery(db.Model):
    """One alert to one notification service, and how sending it went.

    ``dedupe_key`` is unique (``"<instance id>:<status change id>:<service
    id>"`` for down and up alerts), so replaying a status change creates
    nothing twice. Status change ids are the raising instance's own: its id
    in the key keeps a new primary's alerts apart from those it inherited
    from the old one. The payload is the message as made when the alert was
    raised; retries send exactly that. Status goes pending -> sending
    (claimed by one worker) -> sent, or back to pending with
    ``next_attempt_at`` for a retry, or failed. On a failover candidate the
    primary's open alerts wait as inherited until it is promoted.
    """

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        Index("ix_notification_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_notification_deliveries_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    notification_service_id: Mapped[int] = mapped_column(
        ForeignKey("notification_services.id", ondelete="CASCADE"), nullable=False
    )
    endpoint_id: Mapped[int | None] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    status_change_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("status_changes.id", ondelete="SET NULL")
    )
    # down, up, reminder or test
    event: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=DELIVERY_PENDING)
    dedupe_key: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    payload: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at = mapped_column(UTCDateTime)
    claimed_at = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    sent_at = mapped_column(UTCDateTime)

    service = relationship("NotificationService", lazy="joined")

    def to_dict(self) -> dict:
        endpoint = (self.payload or {}).get("endpoint") or {}
        return {
            "id": self.id,
            "serviceId": self.notification_service_id,
            "serviceName": self.service.name if self.service is not None else None,
            "endpointId": self.endpoint_id,
            "endpointName": endpoint.get("name"),
            "event": self.event,
            "status": self.status,
            "attempts": self.attempts,
            "nextAttemptAt": _iso(self.next_attempt_at),
            "lastError": self.last_error,
            "createdAt": _iso(self.created_at),
            "sentAt": _iso(self.sent_at),
        }


def _iso(value):
    return value.isoformat() if value is not None else None
