"""Hourly roll-ups of check results, so long ranges stay fast to read.

Raw results are many (one endpoint at a 60 s interval makes 1,440 a day);
the dashboard's 24 h uptime, the detail page's week and month
and the public status page's 90 days read these rows instead. An hour is
rolled up once it is over (see ``app.services.rollups``), in total and per
location (``result_location_hours``), and marked in
``rolled_up_hours`` so it is never computed twice. A result stored for an
hour that is already rolled up (a dependent's outbox after an outage) marks
that endpoint's hour in ``stale_hours``, and the hour is rolled up again.
"""
from sqlalchemy import Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import UTCDateTime, utcnow


class ResultHour(db.Model):
    """One endpoint's results during one hour (all locations)."""

    __tablename__ = "result_hours"
    __table_args__ = (Index("ix_result_hours_hour", "hour"),)

    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    hour = mapped_column(UTCDateTime, primary_key=True)
    checks: Mapped[int] = mapped_column(Integer, nullable=False)
    ok_checks: Mapped[int] = mapped_column(Integer, nullable=False)
    # Sum and count of the response times that were measured, for averages.
    response_ms_sum: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    response_ms_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    response_ms_max: Mapped[float | None] = mapped_column(Float)


class ResultLocationHour(db.Model):
    """One endpoint's results from one location (instance) during one hour.

    Rolled up with ``result_hours`` (its rows summed over the locations),
    for the detail page's per-location series and uptimes; kept only as
    long as that page looks back.
    """

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
    response_ms_sum: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    response_ms_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    response_ms_max: Mapped[float | None] = mapped_column(Float)


class RolledUpHour(db.Model):
    """An hour whose results are in ``result_hours`` for every endpoint."""

    __tablename__ = "rolled_up_hours"

    hour = mapped_column(UTCDateTime, primary_key=True)
    rolled_up_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class StaleHour(db.Model):
    """An endpoint's rolled-up hour that has gained results since: its
    ``result_hours`` row is recomputed from raw results and the mark removed."""

    __tablename__ = "stale_hours"

    # Hour first: the roll-up looks marks up by hour.
    hour = mapped_column(UTCDateTime, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
