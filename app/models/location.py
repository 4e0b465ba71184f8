"""Per-location state: what each location (instance) last concluded about
each endpoint, and the health of each location as a probe."""
from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import UTCDateTime, utcnow


class LocationStatus(db.Model):
    """One location's thresholded status of one endpoint.

    Kept by ``app.services.consensus`` alone, by applying that location's
    results in ``checked_at`` order with the endpoint's failure and success
    thresholds. ``instance_id`` is the location's instance; it has no
    foreign key, since a standalone or a dependent has no registry row for
    itself.
    """

    __tablename__ = "location_status"
    __table_args__ = (Index("ix_location_status_instance_checked", "instance_id", "last_checked_at"),)

    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    location: Mapped[str] = mapped_column(String(100), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="PENDING")
    consecutive_failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    consecutive_successes: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_checked_at = mapped_column(UTCDateTime)
    last_is_ok: Mapped[bool | None] = mapped_column(Boolean)
    last_response_time_ms: Mapped[float | None] = mapped_column(Float)
    last_failure_reason: Mapped[str | None] = mapped_column(Text)
    # validTo of the certificate in the latest HTTPS result, when it had one.
    certificate_expires_at = mapped_column(UTCDateTime)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ProbeState(db.Model):
    """A location's health as a probe, as this instance knows it.

    ``offline_since`` is set while the location is probe-offline (it sees
    nearly everything DOWN while the others see it UP, or its connectivity
    target fails): it is shown, but left out of every vote. Results checked
    before ``votes_from`` (a dependent's outbox delivered after a silence)
    are history: stored, never applied to its status.
    """

    __tablename__ = "probe_states"

    instance_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    offline_since = mapped_column(UTCDateTime)
    offline_reason: Mapped[str | None] = mapped_column(Text)
    votes_from = mapped_column(UTCDateTime)
    heartbeat_interval: Mapped[int | None] = mapped_column(Integer)
    # The location's own check of CONNECTIVITY_CHECK_TARGET (None: not configured).
    connectivity_ok: Mapped[bool | None] = mapped_column(Boolean)
    connectivity_error: Mapped[str | None] = mapped_column(Text)
    connectivity_checked_at = mapped_column(UTCDateTime)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
