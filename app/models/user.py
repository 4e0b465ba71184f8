"""People who sign in, and the API keys they script with."""
import hashlib
import hmac
import secrets

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db
from app.models.types import UTCDateTime, utcnow

API_KEY_PREFIX = "epm_"
API_KEY_PREFIX_LEN = 12


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), nullable=False, unique=True)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    is_admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    api_keys = relationship("ApiKey", back_populates="user", cascade="all, delete-orphan")

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password, method="scrypt")

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


class ApiKey(db.Model):
    """A key for the JSON API. The key is shown once; only its SHA-256 is kept.

    Keys are 256 random bits, so a fast hash is enough; the lookup is by the
    non-secret prefix and the comparison constant-time.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_used_at = mapped_column(UTCDateTime)
    revoked_at = mapped_column(UTCDateTime)

    user = relationship("User", back_populates="api_keys")

    @classmethod
    def issue(cls, user, name):
        """Make a new key for ``user``; returns (row, plaintext key)."""
        body = secrets.token_urlsafe(32)
        key = f"{API_KEY_PREFIX}{body}"
        row = cls(user=user, name=name, prefix=body[:API_KEY_PREFIX_LEN], key_hash=_sha256(key))
        return row, key

    def matches(self, key: str) -> bool:
        return self.revoked_at is None and hmac.compare_digest(self.key_hash, _sha256(key))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
