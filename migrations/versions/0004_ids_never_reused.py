"""SQLite: endpoint and notification service ids are never handed out twice

Without AUTOINCREMENT, SQLite gives a new row the highest id + 1, so deleting
the newest endpoint and adding another reuses its id; results still on their
way (a dependent's outbox, a check in flight) would then land on an unrelated
endpoint. PostgreSQL sequences never reuse ids, so this changes only SQLite.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("endpoints", "notification_services")


def _recreate(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # SQLite adds AUTOINCREMENT only by rebuilding the table. Dropping the old
    # table with foreign keys on would cascade-delete every result, so the
    # rebuild runs outside a transaction with foreign keys off (the pragma is
    # ignored inside one), and the references are checked afterwards.
    with op.get_context().autocommit_block():
        op.execute("PRAGMA foreign_keys=OFF")
        try:
            for table in TABLES:
                with op.batch_alter_table(table, recreate="always",
                                          table_kwargs={"sqlite_autoincrement": autoincrement}):
                    pass
            broken = op.get_bind().exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"foreign keys broken by the rebuild: {broken[:5]}")
        finally:
            op.execute("PRAGMA foreign_keys=ON")


def upgrade():
    _recreate(True)


def downgrade():
    _recreate(False)
