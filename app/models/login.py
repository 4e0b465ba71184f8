"""Failed sign-in attempts, for rate limiting (see ``app.services.login_throttle``)."""
from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import UTCDateTime, utcnow


class LoginFailure(db.Model):
    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_ip_at", "ip", "attempted_at"),
        Index("ix_login_failures_email_at", "email", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    ip: Mapped[str] = mapped_column(String(64), nullable=False)
    attempted_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
