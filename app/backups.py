"""Backups of the monitor's database, and restoring one.

SQLite is copied with its online backup API: one consistent snapshot taken
while the instance keeps writing (in WAL mode the writers are not held up),
written beside the destination and renamed into place, then checked. A
PostgreSQL database is dumped with ``pg_dump --format=custom`` and restored
with ``pg_restore`` in one transaction.

A restore replaces the whole database, so it refuses while an instance runs
on the data directory (its ``monitor.lock`` is held) unless forced, and it
checks the backup before touching anything: a file that is not a backup of
this database's kind changes nothing.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from app.config import Settings
from app.data_directory import describe_holder, holder

SQLITE_HEADER = b"SQLite format 3\x00"
# pg_dump's custom format starts so.
PG_CUSTOM_HEADER = b"PGDMP"
# Tables a monitor database always has: a SQLite file without them is not one.
REQUIRED_TABLES = ("alembic_version", "endpoints", "response_times", "instance_config")


class BackupError(RuntimeError):
    """A backup or restore cannot go on; the message says why, and nothing
    was changed."""


@dataclass(frozen=True)
class BackupSummary:
    """What a backup file holds."""

    path: Path
    kind: str  # "sqlite" or "postgresql"
    size: int
    results: int | None = None  # rows in response_times (SQLite only)

    def describe(self) -> str:
        counted = f", {self.results} results" if self.results is not None else ""
        return f"{self.path} ({self.kind}, {self.size} bytes{counted})"


def database_kind(settings: Settings) -> str:
    """``sqlite`` or ``postgresql``: which database DATABASE_URL names."""
    return "postgresql" if settings.database_url.startswith("postgresql") else "sqlite"


def sqlite_path(settings: Settings) -> Path:
    """The SQLite database file of ``settings``."""
    return Path(settings.database_url.split(":///", 1)[1])


def backup(settings: Settings, destination: Path) -> BackupSummary:
    """Write a consistent copy of the database to ``destination`` (refusing
    to overwrite a file), safe while the instance runs."""
    destination = destination.expanduser().resolve()
    if destination.exists():
        raise BackupError(f"{destination} exists already: name a new file (a backup never overwrites one)")
    if not destination.parent.is_dir():
        raise BackupError(f"the directory {destination.parent} does not exist")
    aside = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    try:
        if database_kind(settings) == "postgresql":
            _pg_dump(settings, aside)
        else:
            _sqlite_backup(sqlite_path(settings), aside)
        summary = verify(settings, aside)
        os.replace(aside, destination)
    finally:
        aside.unlink(missing_ok=True)
    return BackupSummary(destination, summary.kind, summary.size, summary.results)


def verify(settings: Settings, source: Path) -> BackupSummary:
    """Check that ``source`` is a whole backup this instance's database can
    take; raise ``BackupError`` saying what is wrong."""
    source = source.expanduser().resolve()
    try:
        with open(source, "rb") as handle:
            header = handle.read(16)
    except OSError as exc:
        raise BackupError(f"cannot read {source}: {exc.strerror or exc}") from None
    kind = database_kind(settings)
    found = "sqlite" if header == SQLITE_HEADER else "postgresql" if header.startswith(PG_CUSTOM_HEADER) else None
    if found is None:
        raise BackupError(f"{source} is not a backup: neither a SQLite database nor a pg_dump custom-format file")
    if found != kind:
        raise BackupError(f"{source} is a {found} backup, but this instance's database (DATABASE_URL) "
                          f"is {kind}: restore it into a {found} instance")
    size = source.stat().st_size
    if kind == "postgresql":
        listed = _run_pg_tool("pg_restore", ["--list", str(source)], settings=None)
        if "TABLE public response_times" not in listed and "TABLE response_times" not in listed:
            raise BackupError(f"{source} is a pg_dump file, but not of a monitor database (no response_times table)")
        return BackupSummary(source, kind, size)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as db:
            (check,) = db.execute("PRAGMA integrity_check").fetchone()
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = [t for t in REQUIRED_TABLES if t not in tables]
            if check != "ok":
                raise BackupError(f"{source} is damaged: SQLite's integrity check says {check!r}")
            if missing:
                raise BackupError(f"{source} is a SQLite database, but not a monitor's (no table {missing[0]})")
            (results,) = db.execute("SELECT count(*) FROM response_times").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{source} cannot be read as a SQLite database: {exc}") from None
    return BackupSummary(source, kind, size, results)


def restore(settings: Settings, source: Path, *, force: bool = False) -> BackupSummary:
    """Replace the database with the backup in ``source``, after checking
    it; refuses while an instance runs on the data directory unless
    ``force``."""
    running = holder(settings.data_dir)
    if running is not None and not force:
        raise BackupError(
            f"an instance is running on the data directory {settings.data_dir} ({describe_holder(running)}): "
            "stop it first (a restore replaces the database under it), or pass --force")
    summary = verify(settings, source)
    if summary.kind == "postgresql":
        _run_pg_tool("pg_restore", ["--clean", "--if-exists", "--no-owner", "--no-privileges",
                                    "--single-transaction", "--exit-on-error", str(summary.path)], settings=settings)
    else:
        target = sqlite_path(settings)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Through SQLite, not a file copy: the database's write-ahead log and
        # any reader see the restored pages, never a half-copied file.
        with contextlib.closing(sqlite3.connect(f"file:{summary.path}?mode=ro", uri=True)) as backup_db, \
                contextlib.closing(sqlite3.connect(target, timeout=30)) as live:
            backup_db.backup(live)
    return summary


def _sqlite_backup(database: Path, destination: Path) -> None:
    if not database.exists():
        raise BackupError(f"the database {database} does not exist (DATABASE_PATH / DATA_DIR): nothing to back up")
    # One step (pages=-1): the copy is a single snapshot; WAL writers go on.
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as live, \
            contextlib.closing(sqlite3.connect(destination)) as copy:
        live.backup(copy)
        # A file that stands alone: no write-ahead log beside it.
        copy.execute("PRAGMA journal_mode=DELETE")


def _pg_dump(settings: Settings, destination: Path) -> None:
    _run_pg_tool("pg_dump", ["--format=custom", "--no-owner", f"--file={destination}"], settings=settings)


def _run_pg_tool(tool: str, arguments: list[str], *, settings: Settings | None) -> str:
    """Run pg_dump or pg_restore against the database of ``settings`` (the
    password passed in the environment, not on the command line); its
    output, or ``BackupError`` with its error."""
    binary = shutil.which(tool)
    if binary is None:
        raise BackupError(f"{tool} is not installed (or not on PATH): install PostgreSQL's client tools "
                          f"(Debian: apt-get install postgresql-client) of the server's major version or newer")
    env = dict(os.environ)
    command = [binary, *arguments]
    if settings is not None:
        dsn, password = _libpq_dsn(settings.database_url)
        if password is not None:
            env["PGPASSWORD"] = password
        command.append(f"--dbname={dsn}")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{tool} failed (exit {done.returncode}): {done.stderr.strip()[:2000]}")
    return done.stdout


def _libpq_dsn(database_url: str) -> tuple[str, str | None]:
    """DATABASE_URL as libpq takes it (no SQLAlchemy driver name, no
    password), and the password."""
    parts = urlsplit(database_url)
    scheme = parts.scheme.split("+", 1)[0]
    password = unquote(parts.password) if parts.password is not None else None
    netloc = parts.netloc.rsplit("@", 1)
    if len(netloc) == 2:
        user = netloc[0].split(":", 1)[0]
        netloc = f"{user}@{netloc[1]}"
    else:
        netloc = netloc[0]
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment)), password
