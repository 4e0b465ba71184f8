"""The data directory at start: one instance to a directory, and room to write.

``python -m app start`` takes an exclusive lock on ``DATA_DIR/monitor.lock``
(``fcntl.flock``) and writes its pid and ports into the file. The lock goes
with the process, however it ends, so a crash never leaves a stale lock; a
second instance started on the same directory reads who holds it and stops
with both named, instead of sharing one embedded Redis and one SQLite file
with it (only one clock would run, and nothing would say why).

Before anything else writes there, the directory (and a SQLite database's
own directory, when that is elsewhere) must be writable and have room: a
full disk or a read-only mount stops the start with the directory named,
rather than leaving children failing at every restart.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "monitor.lock"
# Less free space than this and the start is refused: SQLite's journal, the
# results of the next minutes and Redis's append-only file all need room.
MIN_FREE_BYTES = 8 * 1024 * 1024


class DataDirectoryError(RuntimeError):
    """The data directory cannot be used; the message names it and why."""


@dataclass
class DataDirectoryLock:
    """The held lock on a data directory; released by ``release`` or at exit."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1


def claim(data_dir: Path, *, database_url: str, holder: dict) -> DataDirectoryLock:
    """Check that ``data_dir`` can be written and lock it for this instance.

    ``holder`` (pid, ports) is written into the lock file for whoever finds
    the directory in use next. Raises ``DataDirectoryError``.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirectoryError(problem(data_dir, exc)) from None
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DataDirectoryError(_unwritable(data_dir, exc)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held_by = _read_holder(fd)
        os.close(fd)
        raise DataDirectoryError(_in_use(data_dir, held_by, holder)) from None
    lock = DataDirectoryLock(path, fd)
    try:
        record = json.dumps({**holder, "startedAt": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record + b"\n", 0)
        os.fsync(fd)
        for directory in _directories(data_dir, database_url):
            _check_room(directory)
    except OSError as exc:
        lock.release()
        raise DataDirectoryError(_unwritable(data_dir, exc)) from None
    except DataDirectoryError:
        lock.release()
        raise
    return lock


def _directories(data_dir: Path, database_url: str) -> list[Path]:
    """The data directory, and a SQLite file's directory if that differs."""
    directories = [data_dir]
    if database_url.startswith("sqlite:///"):
        database_dir = Path(database_url[len("sqlite:///"):]).parent
        if database_dir != data_dir:
            directories.append(database_dir)
    return directories


def _check_room(directory: Path) -> None:
    """Write, sync and delete a probe file; then ask how much room is left."""
    probe = directory / f".monitor-write-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise DataDirectoryError(_unwritable(directory, exc)) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    if free < MIN_FREE_BYTES:
        raise DataDirectoryError(
            f"the data directory {directory} has only {free // 1024} KiB free; the monitor needs at "
            f"least {MIN_FREE_BYTES // (1024 * 1024)} MiB there to start (its database, Redis's "
            "append-only file): free some space or point DATA_DIR elsewhere"
        )


def problem(directory: Path, exc: OSError) -> str:
    """What an error writing to ``directory`` means, for the operator."""
    if not directory.is_dir() and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot create the data directory {directory}: {_reason(exc)}"
    return _unwritable(directory, exc)


def _unwritable(directory: Path, exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"the data directory {directory} is full ({_reason(exc)}): free some space "
                "or point DATA_DIR elsewhere")
    return (f"the data directory {directory} is not writable ({_reason(exc)}): the monitor keeps its "
            "database, embedded Redis and secret key there; make it writable for this user or "
            "point DATA_DIR elsewhere")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    parts = [f"pid {holder['pid']}" if holder.get("pid") else None,
             f"web port {holder['port']}" if holder.get("port") else None,
             f"sync API port {holder['syncApiPort']}" if holder.get("syncApiPort") else None,
             f"started {holder['startedAt']}" if holder.get("startedAt") else None]
    return ", ".join(p for p in parts if p) or "details unknown"


def _in_use(data_dir: Path, held_by: dict, holder: dict) -> str:
    return (f"the data directory {data_dir} is in use by another instance ({_describe(held_by)}); "
            f"this instance ({_describe({k: v for k, v in holder.items() if k != 'startedAt'})}) "
            "cannot share it: give each instance a DATA_DIR of its own (with DATA_DIR unset it is "
            "the directory of DATABASE_PATH, or ./data)")


def holder(data_dir: Path) -> dict | None:
    """Who holds ``data_dir``'s lock (pid, ports, start time), or None when
    no instance runs on it. Takes the lock for a moment only to ask."""
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or {"pid": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe_holder(held_by: dict) -> str:
    """The holder as the in-use message names it: pid, ports, start time."""
    return _describe(held_by)
