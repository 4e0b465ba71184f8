"""Counts of check results per hour and per day, so long ranges stay fast to read.

Raw results are many (one endpoint at a 60 s interval makes 1,440 a day
from each location) and are kept only days; these rows count them per
endpoint, location (instance) and hour, and per endpoint, location and day,
and are kept far longer. They are kept current as results are stored
(``app.services.rollups.count_results``, in the insert's transaction, for
the rows that insert added), so no reader ever waits for a job to have
rolled anything up. The dashboard's heartbeat bar, the endpoint page's
hour and day, and the map's last hour read raw results; the endpoint
page's week and month, uptimes, the map's day and the status pages' 90
days read these.
"""
from sqlalchemy import Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import UTCDateTime


class ResultLocationHour(db.Model):
    """One endpoint's results from one location (instance) during one hour."""

    __tablename__ = "result_location_hours"
    __table_args__ = (Index("ix_result_location_hours_hour", "hour"),)

    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    hour = mapped_column(UTCDateTime, primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The location the instance reported in that hour (it may be renamed later).
    location: Mapped[str] = mapped_column(String(100), nullable=False)
    checks: Mapped[int] = mapped_column(Integer, nullable=False)
    ok_checks: Mapped[int] = mapped_column(Integer, nullable=False)
    # Sum and count of the response times that were measured, for averages.
    response_ms_sum: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    response_ms_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    response_ms_max: Mapped[float | None] = mapped_column(Float)


class ResultLocationDay(db.Model):
    """One endpoint's results from one location (instance) during one UTC day.

    Days counted before results were counted per location (migration
    0012_counts) have one row with an empty ``instance_id``: every location
    together.
    """

    __tablename__ = "result_location_days"
    __table_args__ = (Index("ix_result_location_days_day", "day"),)

    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    day = mapped_column(UTCDateTime, primary_key=True)  # midnight UTC
    instance_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    location: Mapped[str] = mapped_column(String(100), nullable=False)
    checks: Mapped[int] = mapped_column(Integer, nullable=False)
    ok_checks: Mapped[int] = mapped_column(Integer, nullable=False)
    response_ms_sum: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    response_ms_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    response_ms_max: Mapped[float | None] = mapped_column(Float)
