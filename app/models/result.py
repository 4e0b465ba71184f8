"""Check results (``response_times``) and per-location consensus."""
from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import UTCDateTime, utcnow


class ResponseTime(db.Model):
    """One check result, from whichever instance (location) ran it.

    ``result_id`` is a UUID made where the check ran; its unique constraint
    makes ingestion idempotent. ``synced_at`` is set on a dependent once the
    primary has acknowledged the row: rows of its own with no ``synced_at``
    are its outbox.
    """

    __tablename__ = "response_times"
    __table_args__ = (
        Index("ix_response_times_endpoint_checked", "endpoint_id", "checked_at"),
        Index("ix_response_times_outbox", "synced_at", "id"),
        Index("ix_response_times_instance_checked", "instance_id", "checked_at"),
        # Failed results only: an endpoint's recent failures without reading
        # every result it had (a healthy month from 3 locations is 130,000).
        Index("ix_response_times_failed", "endpoint_id", "checked_at",
              sqlite_where=text("is_ok = 0"), postgresql_where=text("NOT is_ok")),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    result_id: Mapped[str] = mapped_column(String(36), nullable=False, unique=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False)
    instance_id: Mapped[str] = mapped_column(String(64), nullable=False)
    location: Mapped[str] = mapped_column(String(100), nullable=False)
    checked_at = mapped_column(UTCDateTime, nullable=False)
    is_ok: Mapped[bool] = mapped_column(Boolean, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    response_time_ms: Mapped[float | None] = mapped_column(Float)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    check_type: Mapped[str] = mapped_column(String(32), nullable=False)
    check_metadata: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    synced_at = mapped_column(UTCDateTime)

    def to_dict(self) -> dict:
        return {
            "resultId": self.result_id,
            "endpointId": self.endpoint_id,
            "instanceId": self.instance_id,
            "location": self.location,
            "checkedAt": self.checked_at.isoformat(),
            "isOk": self.is_ok,
            "status": self.status,
            "responseTime": self.response_time_ms,
            "failureReason": self.failure_reason,
            "checkType": self.check_type,
            "metadata": self.check_metadata or {},
        }


class AggregatedResult(db.Model):
    """The consensus of all locations about one endpoint at one moment.

    Written whenever the consensus changes (``is_change``) and at a regular
    cadence; ``details`` holds each location's view. The consensus holds
    from one row to the next, so uptime is time-weighted from these rows.
    """

    __tablename__ = "aggregated_results"
    __table_args__ = (
        Index("ix_aggregated_results_endpoint_computed", "endpoint_id", "computed_at"),
        # Change rows only: the consensus in force at some moment is the
        # newest change before it, found in one seek however many regular
        # rows (one every 5 minutes, kept as long as raw results) lie between.
        Index("ix_aggregated_results_changes", "endpoint_id", "computed_at", "id",
              sqlite_where=text("is_change = 1"), postgresql_where=text("is_change")),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False)
    computed_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    consensus: Mapped[str] = mapped_column(String(16), nullable=False)
    locations_up: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    locations_down: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    locations_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    avg_response_time_ms: Mapped[float | None] = mapped_column(Float)
    min_response_time_ms: Mapped[float | None] = mapped_column(Float)
    max_response_time_ms: Mapped[float | None] = mapped_column(Float)
    # True: written because the consensus changed; False: the regular record.
    is_change: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    details: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    reason: Mapped[str | None] = mapped_column(Text)
