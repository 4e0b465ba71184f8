"""The one owner of this instance's identity and cluster state.

The environment chooses the role at first start only. From then on the
instance id, role, cluster epoch, current primary and configuration version
are state in ``instance_config``, read and changed only here, because
failover changes them at run time.
"""
from __future__ import annotations

import logging
import uuid

from flask import current_app
from sqlalchemy import event, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.extensions import db
from app.models import Endpoint, InstanceConfig, NotificationService, Setting, User

logger = logging.getLogger(__name__)

INSTANCE_ID = "instance_id"
ROLE = "role"
EPOCH = "epoch"
PRIMARY_URL = "primary_url"
CONFIG_VERSION = "config_version"


def _insert_if_absent(key: str, value: str) -> None:
    """Insert one key unless present; safe when processes race at start."""
    insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(InstanceConfig).values(key=key, value=value).on_conflict_do_nothing(
        index_elements=["key"]
    )
    db.session.execute(stmt)


def ensure_initialized() -> dict:
    """Write first-start state (id, role, epoch, primary) if missing.

    Called by every process at start; only the first call on a fresh
    database writes anything. Returns the state as stored.
    """
    settings = current_app.config["SETTINGS"]
    _insert_if_absent(INSTANCE_ID, str(uuid.uuid4()))
    _insert_if_absent(ROLE, settings.role)
    _insert_if_absent(EPOCH, "0")
    _insert_if_absent(PRIMARY_URL, settings.primary_sync_url or "")
    _insert_if_absent(CONFIG_VERSION, "0")
    db.session.commit()
    state = state_snapshot()
    if state[ROLE] != settings.role:
        logger.info(
            "role is %s (kept from earlier runs); the environment now says %s",
            state[ROLE], settings.role,
        )
    return state


def state_snapshot() -> dict:
    rows = db.session.execute(select(InstanceConfig.key, InstanceConfig.value)).all()
    return dict(rows)


def _get(key: str) -> str:
    value = db.session.execute(
        select(InstanceConfig.value).where(InstanceConfig.key == key)
    ).scalar_one_or_none()
    if value is None:
        ensure_initialized()
        return _get(key)
    return value


def _set(key: str, value: str) -> None:
    db.session.execute(update(InstanceConfig).where(InstanceConfig.key == key).values(value=value))


def instance_id() -> str:
    """This instance's stable id, made once at first start."""
    return _get(INSTANCE_ID)


def role() -> str:
    return _get(ROLE)


def epoch() -> int:
    return int(_get(EPOCH))


def is_primary() -> bool:
    """Whether this instance is the cluster's primary."""
    from app.config import ROLE_PRIMARY

    return role() == ROLE_PRIMARY


def is_dependent() -> bool:
    """Whether this instance reports to a primary."""
    from app.config import ROLE_DEPENDENT

    return role() == ROLE_DEPENDENT


def may_alert() -> bool:
    """Whether this instance sends alerts: a standalone or the primary, once
    for the whole cluster; a dependent never alerts on its own."""
    from app.config import ROLE_PRIMARY, ROLE_STANDALONE

    return role() in (ROLE_PRIMARY, ROLE_STANDALONE)


def accepts_results() -> bool:
    """Whether other instances' heartbeats are stored here."""
    return is_primary()


def primary_url() -> str | None:
    return _get(PRIMARY_URL) or None


def config_version() -> int:
    return int(_get(CONFIG_VERSION))


def set_role(new_role: str, *, new_epoch: int, new_primary_url: str | None) -> None:
    """Change role, epoch and primary together (one transaction, the caller's)."""
    _set(ROLE, new_role)
    _set(EPOCH, str(new_epoch))
    _set(PRIMARY_URL, new_primary_url or "")


def set_config_version(version: int) -> None:
    """Record the configuration version pulled from the primary (dependents)."""
    _set(CONFIG_VERSION, str(int(version)))


def lock_instance() -> None:
    """Hold this instance's write lock until the transaction ends.

    Serialises rare once-only writes across processes: writing the instance
    id row, which every instance has, makes a second writer wait until this
    transaction ends (a row lock on PostgreSQL, the write lock on SQLite).
    """
    db.session.execute(update(InstanceConfig).where(InstanceConfig.key == INSTANCE_ID)
                       .values(value=InstanceConfig.value))


def get_state(key: str, default: str | None = None) -> str | None:
    """A piece of sync state (token, connection counters) kept here too."""
    value = db.session.execute(
        select(InstanceConfig.value).where(InstanceConfig.key == key)
    ).scalar_one_or_none()
    return default if value is None else value


def set_state(key: str, value: str | None) -> None:
    """Write (or, with ``None``, remove) a piece of sync state; the caller commits."""
    if key in {INSTANCE_ID, ROLE, EPOCH, PRIMARY_URL, CONFIG_VERSION}:
        raise ValueError(f"{key} is changed only through its own function")
    if value is None:
        db.session.execute(InstanceConfig.__table__.delete().where(InstanceConfig.key == key))
        return
    if db.session.execute(update(InstanceConfig).where(InstanceConfig.key == key)
                          .values(value=value)).rowcount == 0:
        _insert_if_absent(key, value)


def instance_identity() -> tuple[str, str]:
    """(instance id, location) stamped on every result made here."""
    return instance_id(), current_app.config["SETTINGS"].instance_location


# --- configuration version -------------------------------------------------
# Every change to configuration (endpoints, notification services, users,
# settings) bumps config_version in the same transaction, so dependents can
# pull with If-None-Match and never miss a change.

_CONFIG_MODELS = (Endpoint, NotificationService, User, Setting)


def _changes_configuration(session: Session) -> bool:
    for obj in session.new:
        if isinstance(obj, _CONFIG_MODELS):
            return True
    for obj in session.deleted:
        if isinstance(obj, _CONFIG_MODELS):
            return True
    for obj in session.dirty:
        if not isinstance(obj, _CONFIG_MODELS) or not session.is_modified(obj):
            continue
        if isinstance(obj, Endpoint):
            state = db.inspect(obj)
            changed = {a.key for a in state.attrs if a.history.has_changes()}
            if changed - Endpoint.RUNTIME_FIELDS - {"updated_at"}:
                return True
        else:
            return True
    return False


@event.listens_for(Session, "before_flush")
def _bump_config_version(session, flush_context, instances):
    if session.info.get("config_version_bumped"):
        return
    if _changes_configuration(session):
        session.info["config_version_bumped"] = True
        # A dependent's version is the primary's, set when it pulls; its own
        # users and keys must not move it, or a pull could match by chance.
        own_role = session.execute(
            select(InstanceConfig.value).where(InstanceConfig.key == ROLE)
        ).scalar_one_or_none()
        if own_role == "dependent":
            return
        # Arithmetic in SQL so concurrent writers never lose an increment.
        session.execute(
            text(
                "UPDATE instance_config SET value = CAST(CAST(value AS INTEGER) + 1 AS VARCHAR(20)) "
                "WHERE key = :key"
            ),
            {"key": CONFIG_VERSION},
        )


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _reset_bump_flag(session):
    session.info.pop("config_version_bumped", None)
