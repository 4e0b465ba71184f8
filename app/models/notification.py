"""Notification services alerts are sent through."""
from sqlalchemy import JSON, Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.endpoint import endpoint_notifications
from app.models.types import UTCDateTime, utcnow


class NotificationService(db.Model):
    """A configured notifier: an apprise URL or a plain JSON webhook."""

    __tablename__ = "notification_services"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    # Secrets live here (URLs with tokens); never rendered back to the UI.
    config: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    is_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    endpoints = relationship(
        "Endpoint", secondary=endpoint_notifications, back_populates="notification_services"
    )
