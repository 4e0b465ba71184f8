"""Databases on the real PostgreSQL server of TEST_DATABASE_URL: the
``pg_app`` fixture's, and every app-level fixture's when TEST_BACKEND=postgres
puts them on PostgreSQL.

Under SQLite a test's database is the file ``monitor.db`` in its data
directory: copied from a migrated template, or made empty by the first app
that opens it. Here a data directory is given a database of this run's own
instead, and every app made on that directory opens it, so two apps of one
test on one directory share a database exactly as they share a SQLite file.

Migrating takes seconds and dropping a database waits for a checkpoint, so
each test takes the next of a few reused databases (``slots``) and brings it
back to the migrated template's state first: every row deleted, every
sequence restarted, the template's rows put back, all in one transaction. A
test that changed the schema (a migration test) leaves a slot whose schema
no longer matches the template's; that slot is made again from the template.
``pg_app``'s database is brought back to the template the same way.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Engine

# Columns, their types and indexes of every relation in the public schema:
# equal for two databases whose schemas are equal.
SCHEMA_FINGERPRINT = text("""
    SELECT concat_ws(':', md5(string_agg(concat_ws(':', c.relname, c.relkind, a.attname,
                                                   format_type(a.atttypid, a.atttypmod), a.attnotnull),
                                         ',' ORDER BY c.relname, a.attnum)),
                     (SELECT count(*) FROM pg_constraint k JOIN pg_namespace s ON s.oid = k.connamespace
                      WHERE s.nspname = 'public'))
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid
    WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped
""")
# Alembic's record of the schema's revision is part of the schema.
KEPT_TABLES = {"alembic_version"}


class PostgresDatabases:
    """This run's databases on one PostgreSQL server: a migrated template,
    reused slots brought back to it, and which data directory has which."""

    def __init__(self, server_url: str):
        self.server_url = server_url
        self.prefix = f"monitor_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        # Pre-pinged: a server restarted during the run leaves dead pooled connections.
        self.server = create_engine(server_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        self.template = f"{self.prefix}_template"
        self.template_dir: Path | None = None
        self.template_made = False
        self.slots: list[str] = []
        self.taken = 0
        self.by_directory: dict[Path, str] = {}
        self._fingerprint = ""
        self._tables: list[str] = []
        self._sequences: list[str] = []
        self._rows: dict[str, list[dict]] = {}

    def url(self, name: str) -> str:
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    # The template, made once per run.

    def ensure_template(self, migrate: Callable[[str], None]) -> str:
        """The migrated template's URL; made at the first call by ``migrate(url)``."""
        url = self.url(self.template)
        if self._fingerprint:
            return url
        self._execute(f'CREATE DATABASE "{self.template}"')
        self.template_made = True
        migrate(url)
        engine = create_engine(url)
        with engine.connect() as conn:
            self._fingerprint = conn.execute(SCHEMA_FINGERPRINT).scalar_one()
            self._tables = conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")).scalars().all()
            self._sequences = conn.execute(text(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")).scalars().all()
            for table in self._tables:
                if table not in KEPT_TABLES:
                    rows = conn.execute(text(f'SELECT * FROM "{table}"')).mappings().all()
                    if rows:
                        self._rows[table] = [dict(row) for row in rows]
        engine.dispose()
        return url

    def reset(self, name: str) -> str:
        """Bring database ``name`` (made if missing) to the template's state; its URL.

        Nobody may stay connected: an app that a test left open (or a thread
        still writing) must not see the next test.
        """
        if self._vacate(name):
            engine = create_engine(self.url(name))
            try:
                with engine.connect() as conn:
                    same_schema = conn.execute(SCHEMA_FINGERPRINT).scalar_one() == self._fingerprint
                if same_schema:
                    self._restore_rows(engine)
                    return self.url(name)
            finally:
                engine.dispose()
            self._execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return self.url(name)

    # Databases for one test.

    def start_test(self) -> None:
        """Forget the last test's directories; its slots are free again."""
        self.taken = 0
        self.by_directory.clear()

    def for_directory(self, data_dir: Path) -> str:
        """The database of ``data_dir``: the one it was given, or an empty one."""
        data_dir = data_dir.resolve()
        if data_dir == self.template_dir:
            return self.url(self.template)
        if data_dir not in self.by_directory:
            self.by_directory[data_dir] = self._empty()
        return self.by_directory[data_dir]

    def copy_template(self, data_dir: Path) -> str:
        """Give ``data_dir`` a database in the migrated template's state."""
        url = self.reset(self._next_slot())
        self.by_directory[data_dir.resolve()] = url
        return url

    def drop_all(self) -> None:
        """Drop every database of this run; a run that made none (one with no
        way to the server, in a network namespace) does not connect."""
        made = [*self.slots, self.template] if self.template_made else self.slots
        for name in made:
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.server.dispose()

    # How.

    def _empty(self) -> str:
        name = self._next_slot()
        if not self._vacate(name):
            self._execute(f'CREATE DATABASE "{name}"')
        url = self.url(name)
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        return url

    def _next_slot(self) -> str:
        if self.taken == len(self.slots):
            self.slots.append(f"{self.prefix}_{len(self.slots)}")
        self.taken += 1
        return self.slots[self.taken - 1]

    def _vacate(self, name: str) -> bool:
        """End every connection to database ``name``; whether it exists."""
        with self.server.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
            return conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                {"name": name}).first() is not None

    def _restore_rows(self, engine: Engine) -> None:
        with engine.begin() as conn:
            # Rows go in any order, so the foreign keys' triggers stay off.
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            for table in self._tables:
                if table not in KEPT_TABLES:
                    conn.execute(text(f'DELETE FROM "{table}"'))
            for sequence in self._sequences:
                conn.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))
            for table, rows in self._rows.items():
                columns = list(rows[0])
                conn.execute(text(f'INSERT INTO "{table}" ({", ".join(columns)}) '
                                  f'VALUES ({", ".join(":" + c for c in columns)})'), rows)

    def _execute(self, sql: str) -> None:
        with self.server.connect() as conn:
            conn.execute(text(sql))


# This run's databases when the app-level fixtures are on PostgreSQL; kept
# here, not in conftest.py, which tests also import under a second name.
databases: PostgresDatabases | None = None
