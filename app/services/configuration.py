"""The one owner of this instance's identity and cluster state.

The environment chooses the role at first start only. From then on the
instance id, role, cluster epoch, current primary and configuration version
are state in ``instance_config``, read and changed only here, because
failover changes them at run time.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy import event, select, text, type_coerce, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.config import ROLE_DEPENDENT, ROLE_FENCED, ROLE_PRIMARY, ROLE_STANDALONE
from app.extensions import db
from app.models import ClusterEvent, Endpoint, InstanceConfig, NotificationService, Setting, User, utcnow
from app.models.encrypted import EncryptedText

logger = logging.getLogger(__name__)

INSTANCE_ID = "instance_id"
ROLE = "role"
EPOCH = "epoch"
PRIMARY_URL = "primary_url"
PRIMARY_ID = "primary_id"
CONFIG_VERSION = "config_version"
# "<epoch>:<candidate id>": the one vote this instance granted, for the
# newest epoch it voted in.
VOTE = "vote"
# When this instance last became the primary: alerts go out for changes
# from then on, never for what it saw as a dependent.
ALERTING_SINCE = "alerting_since"
_OWN_KEYS = frozenset({INSTANCE_ID, ROLE, EPOCH, PRIMARY_URL, PRIMARY_ID, CONFIG_VERSION, VOTE, ALERTING_SINCE})
# A dependent's access token, got with the join secret: the one copy of a
# credential of the cluster kept here, so it is encrypted at rest.
SYNC_TOKEN = "sync_token"
SECRET_STATE_KEYS = frozenset({SYNC_TOKEN})


@dataclass(frozen=True)
class ClusterState:
    """Role, epoch and primary as one consistent reading."""

    instance_id: str
    role: str
    epoch: int
    primary_id: str | None
    primary_url: str | None
    config_version: int

    @property
    def is_primary(self) -> bool:
        return self.role == ROLE_PRIMARY

    @property
    def is_dependent(self) -> bool:
        return self.role == ROLE_DEPENDENT

    @property
    def is_fenced(self) -> bool:
        return self.role == ROLE_FENCED

    @property
    def is_clustered(self) -> bool:
        return self.role != ROLE_STANDALONE

    @property
    def may_alert(self) -> bool:
        return self.role in (ROLE_PRIMARY, ROLE_STANDALONE)

    @property
    def accepts_results(self) -> bool:
        return self.role == ROLE_PRIMARY

    @property
    def accepts_configuration(self) -> bool:
        return self.role in (ROLE_PRIMARY, ROLE_STANDALONE)


def _insert_if_absent(key: str, value) -> None:
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
    _insert_if_absent(PRIMARY_ID, "")
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


def snapshot() -> ClusterState:
    """Role, epoch and primary read together (one query, one transaction)."""
    state = state_snapshot()
    if ROLE not in state or EPOCH not in state:
        ensure_initialized()
        state = state_snapshot()
    return ClusterState(
        instance_id=state[INSTANCE_ID], role=state[ROLE], epoch=int(state[EPOCH]),
        primary_id=state.get(PRIMARY_ID) or None, primary_url=state.get(PRIMARY_URL) or None,
        config_version=int(state.get(CONFIG_VERSION) or 0))


def locked_snapshot() -> ClusterState:
    """``snapshot``, with role and epoch held until the transaction ends, so
    a transition waits for the work done under them (a share lock on
    PostgreSQL; on SQLite the writer already holds the database's lock)."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(select(InstanceConfig.value).where(InstanceConfig.key.in_([ROLE, EPOCH]))
                           .with_for_update(read=True)).all()
    return snapshot()


def _get(key: str) -> str:
    value = db.session.execute(
        select(InstanceConfig.value).where(InstanceConfig.key == key)
    ).scalar_one_or_none()
    if value is None:
        ensure_initialized()
        return _get(key)
    return value


def _set(key: str, value: str) -> None:
    if db.session.execute(update(InstanceConfig).where(InstanceConfig.key == key)
                          .values(value=value)).rowcount == 0:
        _insert_if_absent(key, value)


def instance_id() -> str:
    """This instance's stable id, made once at first start."""
    return _get(INSTANCE_ID)


def role() -> str:
    """The role as stored, for display; code asks the predicates below."""
    return _get(ROLE)


def epoch() -> int:
    return int(_get(EPOCH))


def is_primary() -> bool:
    """Whether this instance is the cluster's primary (and not fenced)."""
    return snapshot().is_primary


def is_dependent() -> bool:
    """Whether this instance reports to a primary."""
    return snapshot().is_dependent


def is_fenced() -> bool:
    """Whether this primary has fenced itself off (no majority in reach)."""
    return snapshot().is_fenced


def is_clustered() -> bool:
    """Whether this instance belongs to a cluster (any role but standalone)."""
    return snapshot().is_clustered


def may_alert() -> bool:
    """Whether this instance sends alerts: a standalone or the primary, once
    for the whole cluster; a dependent or a fenced primary never does."""
    return snapshot().may_alert


def accepts_results() -> bool:
    """Whether other instances' heartbeats are stored here."""
    return snapshot().accepts_results


def accepts_configuration() -> bool:
    """Whether configuration may be changed here (UI, JSON API, CLI)."""
    return snapshot().accepts_configuration


def primary_url() -> str | None:
    return _get(PRIMARY_URL) or None


def config_version() -> int:
    return int(_get(CONFIG_VERSION))


def alerting_since() -> datetime | None:
    """When this instance last became the primary (None: always alerted here)."""
    value = get_state(ALERTING_SINCE)
    return datetime.fromisoformat(value) if value else None


def set_role(new_role: str, *, new_epoch: int, new_primary_url: str | None,
             new_primary_id: str | None = None) -> None:
    """Write role, epoch and primary unconditionally (one transaction, the
    caller's). For set-up and tests; run-time changes use ``transition``."""
    _set(ROLE, new_role)
    _set(EPOCH, str(new_epoch))
    _set(PRIMARY_URL, new_primary_url or "")
    _set(PRIMARY_ID, new_primary_id or "")


def set_primary_id(primary_id: str) -> None:
    """Record the primary's id once registration tells it (the caller commits)."""
    _set(PRIMARY_ID, primary_id)


def transition(seen: ClusterState, *, new_role: str, new_epoch: int, primary_id: str | None,
               primary_url: str | None, kind: str, detail: str = "") -> bool:
    """Move from ``seen`` to the new role and epoch, if nobody moved first.

    Compare-and-set: the epoch and role rows change only while they still
    hold what ``seen`` read (``... WHERE value = :seen``), so of two
    processes of one instance racing to promote it, one wins and the other
    changes nothing. Records the transition as a cluster event and commits;
    returns whether this call made it.
    """
    if new_epoch < seen.epoch:
        raise ValueError(f"epoch {new_epoch} is older than {seen.epoch}")
    moved = db.session.execute(
        update(InstanceConfig).where(InstanceConfig.key == EPOCH, InstanceConfig.value == str(seen.epoch))
        .values(value=str(new_epoch))).rowcount
    if moved:
        moved = db.session.execute(
            update(InstanceConfig).where(InstanceConfig.key == ROLE, InstanceConfig.value == seen.role)
            .values(value=new_role)).rowcount
    if not moved:
        db.session.rollback()
        return False
    _set(PRIMARY_ID, primary_id or "")
    _set(PRIMARY_URL, primary_url or "")
    if new_role == ROLE_PRIMARY and not seen.is_primary:
        _set(ALERTING_SINCE, utcnow().isoformat())
    record_event(kind, new_epoch, subject_id=primary_id, detail=detail)
    db.session.commit()
    logger.warning("cluster: %s at epoch %d (was %s at epoch %d)%s", kind, new_epoch, seen.role, seen.epoch,
                   f": {detail}" if detail else "")
    return True


def record_event(kind: str, at_epoch: int, *, subject_id: str | None = None, detail: str = "") -> None:
    """Keep one cluster event (the caller commits)."""
    db.session.add(ClusterEvent(at=utcnow(), epoch=at_epoch, kind=kind, subject_id=subject_id,
                                detail=detail[:2000]))


def cluster_events(limit: int = 50) -> list[ClusterEvent]:
    return list(db.session.execute(
        select(ClusterEvent).order_by(ClusterEvent.id.desc()).limit(limit)).scalars())


def vote_granted() -> tuple[int, str | None]:
    """(epoch, candidate) of the newest vote this instance granted."""
    value = get_state(VOTE)
    if not value:
        return 0, None
    voted_epoch, _, candidate = value.partition(":")
    return int(voted_epoch), candidate or None


def grant_vote(for_epoch: int, candidate_id: str, *, detail: str = "") -> bool:
    """Grant ``candidate_id`` this instance's one vote for ``for_epoch``.

    At most one candidate per epoch, persisted before the answer leaves, so
    a restart cannot vote twice; asking again for the same candidate gets
    the same yes. Only epochs past this instance's own count. Commits.
    """
    lock_instance()  # one voter at a time across this instance's processes
    voted_epoch, voted_for = vote_granted()
    if for_epoch <= epoch() or for_epoch < voted_epoch or (for_epoch == voted_epoch and voted_for != candidate_id):
        db.session.rollback()
        return False
    if (voted_epoch, voted_for) != (for_epoch, candidate_id):
        _set(VOTE, f"{for_epoch}:{candidate_id}")
        record_event("vote", for_epoch, subject_id=candidate_id, detail=detail)
    db.session.commit()
    return True


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
    column = type_coerce(InstanceConfig.value, EncryptedText) if key in SECRET_STATE_KEYS else InstanceConfig.value
    value = db.session.execute(select(column).where(InstanceConfig.key == key)).scalar_one_or_none()
    return default if value is None else value


def set_state(key: str, value: str | None) -> None:
    """Write (or, with ``None``, remove) a piece of sync state; the caller commits."""
    if key in _OWN_KEYS:
        raise ValueError(f"{key} is changed only through its own function")
    if value is None:
        db.session.execute(InstanceConfig.__table__.delete().where(InstanceConfig.key == key))
        return
    if key in SECRET_STATE_KEYS:
        value = type_coerce(value, EncryptedText)
    if db.session.execute(update(InstanceConfig).where(InstanceConfig.key == key)
                          .values(value=value)).rowcount == 0:
        _insert_if_absent(key, value)


def instance_identity() -> tuple[str, str]:
    """(instance id, location) stamped on every result made here."""
    return instance_id(), current_app.config["SETTINGS"].instance_location


# --- configuration version -------------------------------------------------
# Every change to configuration (endpoints, notification services, users,
# API keys, settings, membership, maintenance windows) bumps config_version in the same
# transaction, so dependents can pull with If-None-Match and never miss a
# change, and failover candidates hold what the primary holds.

from app.models import ApiKey, MaintenanceWindow, MonitoringInstance  # noqa: E402  (only the version rules below use them)

_CONFIG_MODELS = (Endpoint, NotificationService, User, Setting, ApiKey, MonitoringInstance, MaintenanceWindow)
# Columns written in the course of running, not configuration: an
# endpoint's runtime state, when a key was last used.
_RUNTIME_COLUMNS = {Endpoint: Endpoint.RUNTIME_FIELDS | {"updated_at"}, ApiKey: frozenset({"last_used_at"})}
# Of a member, only who and where it is and its place in the failover order
# count; its heartbeats, health and versions do not.
MEMBERSHIP_FIELDS = frozenset({"name", "location", "sync_url", "failover_order", "role"})


def _changes_configuration(session: Session) -> bool:
    for obj in session.new:
        if isinstance(obj, _CONFIG_MODELS):
            return True
    for obj in session.deleted:
        if isinstance(obj, _CONFIG_MODELS):
            return True
    for obj in session.dirty:
        if isinstance(obj, _CONFIG_MODELS) and session.is_modified(obj) and _changed_configuration(obj):
            return True
    return False


def _changed_configuration(obj) -> bool:
    """Whether a modified row's changes include configuration."""
    if not isinstance(obj, (Endpoint, ApiKey, MonitoringInstance)):
        return True
    changed = {a.key for a in db.inspect(obj).attrs if a.history.has_changes()}
    if isinstance(obj, MonitoringInstance):
        return bool(changed & MEMBERSHIP_FIELDS)
    return bool(changed - _RUNTIME_COLUMNS[type(obj)])


@event.listens_for(Session, "before_flush")
def _bump_config_version(session, flush_context, instances):
    if not session.info.get("config_version_bumped") and _changes_configuration(session):
        _bump_once(session)


def configuration_written() -> None:
    """Bump ``config_version`` for configuration rows written past the ORM
    (bulk inserts through Core, which no flush sees): once per transaction,
    however many rows, as a flush does."""
    _bump_once(db.session)


def _bump_once(session: Session) -> None:
    if session.info.get("config_version_bumped"):
        return
    session.info["config_version_bumped"] = True
    # A dependent's version is the primary's, set when it pulls; its own
    # users and keys must not move it, or a pull could match by chance.
    own_role = session.execute(
        select(InstanceConfig.value).where(InstanceConfig.key == ROLE)
    ).scalar_one_or_none()
    if own_role in (ROLE_DEPENDENT, ROLE_FENCED):
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
