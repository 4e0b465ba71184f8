"""Every secret stored in the database, encrypted, re-encrypted or opened in bulk.

The columns that hold secrets use the types of ``app.models.encrypted``,
so everyday reads and writes never see ciphertext. This module works on
the stored values themselves, for three jobs:

- ``rotate``: re-encrypt every secret under the first key of SECRETS_KEY
  (``./monitor secrets rotate``), plain text left from before encryption
  included, in one transaction;
- ``encrypt_plaintext``: encrypt what was stored in plain text (the
  migration that introduced encryption);
- ``decrypt_all``: store every secret in plain text again (that
  migration's downgrade).

``check_readable`` runs at start, so an instance given the wrong key stops
with a message naming SECRETS_KEY instead of failing check after check.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select, type_coerce, update
from sqlalchemy.engine import Connection

from app.models import Endpoint, InstanceConfig, NotificationService
from app.models.encrypted import EncryptedText, EncryptedType
from app.secret_box import SecretBox, SecretUnreadable, current_box
from app.services.configuration import INSTANCE_ID, SECRET_STATE_KEYS

logger = logging.getLogger(__name__)

_BATCH = 500


@dataclass(frozen=True)
class SecretColumn:
    """A column holding secrets, and which of its rows do."""

    label: str
    table: object
    key: str
    column: str
    type: EncryptedType
    # Only rows whose key is one of these (a key/value table); None: every row.
    keys: frozenset | None = None


def secret_columns() -> list[SecretColumn]:
    """Every place a secret is stored, in the order they are processed."""
    services, endpoints, state = NotificationService.__table__, Endpoint.__table__, InstanceConfig.__table__
    return [
        SecretColumn("notification service settings", services, "id", "config", services.c.config.type),
        SecretColumn("endpoint URL credentials", endpoints, "id", "target", endpoints.c.target.type),
        SecretColumn("endpoint secret options and headers", endpoints, "id", "options", endpoints.c.options.type),
        SecretColumn("sync token (from the join secret)", state, "key", "value", EncryptedText(),
                     keys=SECRET_STATE_KEYS),
    ]


@dataclass
class ColumnCount:
    """What one pass did to one column: secrets seen, changed, and found in plain text."""

    label: str
    secrets: int = 0
    rewritten: int = 0
    plaintext: int = 0


@dataclass
class SecretsReport:
    """What one pass did, column by column, with the totals."""

    columns: list[ColumnCount] = field(default_factory=list)

    @property
    def rewritten(self) -> int:
        return sum(c.rewritten for c in self.columns)

    @property
    def plaintext(self) -> int:
        return sum(c.plaintext for c in self.columns)

    @property
    def secrets(self) -> int:
        return sum(c.secrets for c in self.columns)


Progress = Callable[[str], None]


def rotate(connection: Connection, *, progress: Progress | None = None, box: SecretBox | None = None) -> SecretsReport:
    """Re-encrypt every secret under the first key; the caller commits.

    1. This instance's write lock is taken first (the instance id row), so
       no configuration change lands between a row's read and its rewrite
       (SQLite: the database's write lock; PostgreSQL: rows are also read
       FOR UPDATE).
    2. A secret that no key decrypts raises ``SecretUnreadable`` and the
       caller's rollback leaves everything as it was.
    """
    connection.execute(update(InstanceConfig.__table__).where(InstanceConfig.__table__.c.key == INSTANCE_ID)
                       .values(value=InstanceConfig.__table__.c.value))
    return _reseal(connection, box or current_box(), _rotate_value, progress, lock=True)


def encrypt_plaintext(connection: Connection, *, progress: Progress | None = None,
                      box: SecretBox | None = None) -> SecretsReport:
    """Encrypt the secrets stored in plain text; tokens stay as they are."""
    return _reseal(connection, box or current_box(), _encrypt_value, progress)


def decrypt_all(connection: Connection, *, progress: Progress | None = None,
                box: SecretBox | None = None) -> SecretsReport:
    """Store every secret in plain text again (for a downgrade)."""
    return _reseal(connection, box or current_box(), _decrypt_value, progress)


def check_readable(connection: Connection, *, box: SecretBox | None = None) -> SecretsReport:
    """Decrypt every stored secret once; ``SecretUnreadable`` naming how many
    fail and where the keys came from. Writes nothing."""
    box = box or current_box()
    report = SecretsReport()
    unreadable: dict[str, int] = {}
    for place in secret_columns():
        count = ColumnCount(place.label)
        for _, stored in _stored_rows(connection, place):
            secrets, plaintext = place.type.secrets_in(stored)
            count.secrets += secrets
            count.plaintext += plaintext
            try:
                place.type.unseal(stored, box)
            except SecretUnreadable:
                unreadable[place.label] = unreadable.get(place.label, 0) + 1
        report.columns.append(count)
    if unreadable:
        raise SecretUnreadable(
            f"{sum(unreadable.values())} stored secrets ("
            + ", ".join(f"{label}: {n}" for label, n in unreadable.items())
            + f") cannot be decrypted with {box.source}: they were encrypted under another key. "
            "Set SECRETS_KEY to the key they were written with (during a rotation: the new key "
            "first, then the old ones, separated by commas)")
    return report


# --- one pass over every secret ----------------------------------------------


def _rotate_value(place, stored, box):
    secrets, _ = place.type.secrets_in(stored)
    return place.type.seal(place.type.unseal(stored, box), box) if secrets else None


def _encrypt_value(place, stored, box):
    _, plaintext = place.type.secrets_in(stored)
    return place.type.seal(place.type.unseal(stored, box), box) if plaintext else None


def _decrypt_value(place, stored, box):
    secrets, plaintext = place.type.secrets_in(stored)
    return place.type.unseal(stored, box) if secrets > plaintext else None


def _reseal(connection, box, change, progress, *, lock: bool = False) -> SecretsReport:
    report = SecretsReport()
    for place in secret_columns():
        count = ColumnCount(place.label)
        raw = place.type.impl_instance
        key = place.table.c[place.key]
        write = (update(place.table).where(key == bindparam("_key"))
                 .values({place.column: bindparam("_value", type_=raw)}))
        pending = []
        for row_key, stored in _stored_rows(connection, place, lock=lock):
            secrets, plaintext = place.type.secrets_in(stored)
            count.secrets += secrets
            changed = change(place, stored, box)
            if changed is None:
                continue
            count.plaintext += plaintext
            count.rewritten += 1
            pending.append({"_key": row_key, "_value": changed})
            if len(pending) >= _BATCH:
                connection.execute(write, pending)
                pending = []
                if progress:
                    progress(f"  {place.label}: {count.rewritten} rows so far")
        if pending:
            connection.execute(write, pending)
        report.columns.append(count)
        if progress:
            progress(f"{place.label}: {count.rewritten} rows rewritten, {count.secrets} secrets"
                     + (f" ({count.plaintext} were plain text)" if count.plaintext else ""))
    return report


def _stored_rows(connection, place: SecretColumn, *, lock: bool = False):
    """(key, stored value) of each row, the value as stored: ciphertext, not opened."""
    key = place.table.c[place.key]
    query = select(key, type_coerce(place.table.c[place.column], place.type.impl_instance)).order_by(key)
    if place.keys is not None:
        query = query.where(key.in_(sorted(place.keys)))
    if lock and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    return connection.execute(query).all()
