"""Maintenance windows: times when chosen endpoints raise no alerts."""
from sqlalchemy import JSON, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import UTCDateTime, utcnow


class MaintenanceWindow(db.Model):
    """A one-off window (``starts_at`` to ``ends_at``) or a recurring one (a
    cron expression read in ``time_zone``, each occurrence lasting
    ``duration_minutes``), covering the endpoints it names and every
    endpoint of the groups it names.

    Configuration owned by the primary (a change bumps ``config_version``);
    the schedule arithmetic lives in ``app.services.maintenance``.
    """

    __tablename__ = "maintenance_windows"
    # SQLite: never hand out a deleted row's id again (as migration 0004 does for the others).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    # One-off: both set. Recurring: both None.
    starts_at = mapped_column(UTCDateTime)
    ends_at = mapped_column(UTCDateTime)
    # Recurring: a five-field cron expression in an IANA time zone.
    cron_expression: Mapped[str | None] = mapped_column(String(100))
    time_zone: Mapped[str | None] = mapped_column(String(64))
    duration_minutes: Mapped[int | None] = mapped_column(Integer)
    # Endpoint ids and group names (endpoint.group_name) it covers.
    endpoint_ids: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    group_names: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    # A switched-off window covers nothing until switched on again.
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    @property
    def is_recurring(self) -> bool:
        return self.cron_expression is not None
