"""Cluster membership and this instance's own persisted state."""
from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.types import UTCDateTime, utcnow


class InstanceConfig(db.Model):
    """Key/value state of this instance: id, role, epoch, primary, config version.

    Read and written only through ``app.services.configuration``.
    """

    __tablename__ = "instance_config"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)


class MonitoringInstance(db.Model):
    """An instance of the cluster, as the primary (and every member) knows it."""

    __tablename__ = "monitoring_instances"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    location: Mapped[str] = mapped_column(String(100), nullable=False)
    sync_url: Mapped[str | None] = mapped_column(String(2048))
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="dependent")
    failover_order: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # active, inactive (heartbeats stopped) or failed.
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    version: Mapped[str | None] = mapped_column(String(32))
    last_heartbeat_at = mapped_column(UTCDateTime)
    registered_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    system_info: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    connection_info: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    config_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class InstanceToken(db.Model):
    """An access token issued to an instance; only its hash is stored."""

    __tablename__ = "instance_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("monitoring_instances.id", ondelete="CASCADE"), nullable=False, index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    permissions: Mapped[str] = mapped_column(String(200), nullable=False, default="sync")
    issued_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at = mapped_column(UTCDateTime, nullable=False)
    last_used_at = mapped_column(UTCDateTime)
    revoked_at = mapped_column(UTCDateTime)


class ClusterEvent(db.Model):
    """One cluster transition seen here: suspect, vote, promote, follow,
    step down, fence, unfence, hand over. Kept as history for the Instances
    page; written only through ``app.services.configuration``."""

    __tablename__ = "cluster_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at = mapped_column(UTCDateTime, nullable=False, default=utcnow, index=True)
    epoch: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    # The instance the event is about (the one promoted, followed, voted for).
    subject_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, nullable=False, default="")
