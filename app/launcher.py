"""The one-command start: embedded Redis, migrations, then every process.

``python -m app start`` runs what the Procfile lists (web, sync, worker,
clock) as child processes of one supervisor, restarts a child that dies
(after a backoff that grows while it keeps dying), and stops them all on
Ctrl-C or SIGTERM. With ``REDIS_URL`` unset it first starts an embedded
redis-server (``app.embedded_redis``) on a unix socket in the data
directory, hands its address to the children, and supervises it like
them: restarted on the same socket when it dies, stopped last.

To keep the whole instance small, the children are forked from the
launcher once it has loaded everything they run (``preload``), so they
share those pages (``child_processes.fork``), and one gunicorn serves
both the web UI's port and the sync API's (``wsgi:both``), where the
Procfile runs a server for each.

Before anything is written the data directory is locked for this instance
and checked for room (``app.data_directory``), and a redis-server that an
earlier, crashed start left working there is stopped.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app import child_processes
from app.config import ConfigError, load_settings
from app.data_directory import DataDirectoryError, claim
from app.services.accounts import InvalidAccount

logger = logging.getLogger("app.launcher")

# A child that dies is started again after RESTART_DELAY_SECONDS, doubling
# at each death in a row up to MAX_RESTART_DELAY_SECONDS; one that ran for
# STEADY_SECONDS starts from the first delay again.
RESTART_DELAY_SECONDS = 1.0
MAX_RESTART_DELAY_SECONDS = 30.0
STEADY_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
POLL_SECONDS = 0.2
ROOT = Path(__file__).resolve().parent.parent


def prepare_database(app) -> dict:
    """Apply migrations and write first-start state; returns that state."""
    from flask_migrate import upgrade

    from app.services import accounts, configuration, failover

    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        _check_secrets_readable()
        state = configuration.ensure_initialized()
        accounts.ensure_admin_from_env()
        followed = failover.rejoin_at_start()
        if followed:
            logger.warning("a newer primary holds the cluster: this instance rejoins as a dependent of %s",
                           followed)
            state = configuration.state_snapshot()
    return state


def _check_secrets_readable() -> None:
    """Stop the start when the stored secrets do not decrypt with this
    instance's key (a wrong SECRETS_KEY, a database restored without its
    key file), instead of failing every check and alert that needs one."""
    from flask import current_app

    from app.extensions import db
    from app.config import SECRETS_KEY_FILE
    from app.secret_box import SecretUnreadable
    from app.services import secrets_at_rest

    try:
        secrets_at_rest.check_readable(db.session.connection())
    except SecretUnreadable as exc:
        raise ConfigError(str(exc)) from None
    finally:
        db.session.rollback()
    settings = current_app.config["SETTINGS"]
    if db.engine.dialect.name == "postgresql" and not settings.secrets_keys:
        # Processes on other machines would generate keys of their own.
        logger.warning("SECRETS_KEY is unset: secrets are encrypted under the key file %s; every process "
                       "that shares this database from another machine needs that key in SECRETS_KEY",
                       settings.data_dir / SECRETS_KEY_FILE)


# Threads of each web worker; one server answers both ports, so the web
# UI's requests and the sync API's share them.
WEB_THREADS = 8


def child_processes_for(settings, worker_count: int, web_concurrency: int) -> dict[str, Callable[[], int | None]]:
    """What each child runs, by name: the Procfile's processes, but web and
    sync as one server."""
    children = {"web": lambda: serve_http(settings, web_concurrency), "clock": _run_clock}
    for n in range(worker_count):
        children[f"worker.{n + 1}"] = _run_worker
    return children


def serve_http(settings, web_concurrency: int) -> None:
    """gunicorn listening on PORT and SYNC_API_PORT (in a forked child)."""
    from gunicorn.app import wsgiapp

    sys.argv = ["gunicorn", "--config", str(ROOT / "gunicorn.conf.py"),
                "--worker-tmp-dir", "/dev/shm" if Path("/dev/shm").is_dir() else "/tmp",
                "--access-logfile", "-", "--no-control-socket",
                "--bind", f"{settings.host}:{settings.port}", "--bind", f"{settings.host}:{settings.sync_api_port}",
                "--workers", str(web_concurrency), "--threads", str(WEB_THREADS), "wsgi:both"]
    wsgiapp.run(prog="gunicorn")


def _run_clock() -> None:
    from workers import clock

    clock.main()


def _run_worker() -> int:
    from workers import worker

    return worker.main()


def set_up(settings) -> int:
    """Migrations and first-start state (``prepare_database``), in a forked
    child that exits when done: alembic, with mako and pygments (about
    11 MB), is loaded there only, never in the launcher, whose pages every
    child shares. Returns the child's exit code (2 after a configuration
    error it printed)."""

    def run() -> int:
        # Migrations finish once begun; a stop asked for meanwhile is the
        # launcher's to act on afterwards.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        from app import create_app

        try:
            prepare_database(create_app(serve="none", settings=settings))
        except (InvalidAccount, ConfigError) as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        return 0

    return child_processes.fork("set-up", run).wait()


def preload() -> dict:
    """Import and build what the children run, before the first fork: the
    web and sync apps, the jobs' app, the modules the jobs and the clock
    import when they run, gunicorn and its worker class; then what every
    child would otherwise build for itself at its first query (the ORM's
    mappers, the database dialect's first connection). Returns the
    instance's state, read by that query."""
    import gunicorn.app.wsgiapp  # noqa: F401
    import gunicorn.workers.gthread  # noqa: F401

    import wsgi  # noqa: F401
    import workers.clock  # noqa: F401
    import workers.jobs.alerts  # noqa: F401
    import workers.jobs.checks  # noqa: F401
    import workers.jobs.consensus  # noqa: F401
    import workers.jobs.failover  # noqa: F401
    import workers.jobs.sync  # noqa: F401
    import workers.worker  # noqa: F401
    from app.services import (alerts, configuration, consensus, failover, maintenance,  # noqa: F401
                              results, rollups, scheduling)
    from app.services.sync import dependent, primary, tokens  # noqa: F401
    from sqlalchemy.orm import configure_mappers

    from app.extensions import db
    from workers import jobs

    configure_mappers()
    with jobs.app().app_context():
        state = configuration.state_snapshot()
        db.session.remove()
        db.engine.dispose()  # each child opens its own connections
    return state


@dataclass
class Backoff:
    """When a dead child may start again: later at each death in a row."""

    deaths: int = 0
    started_at: float = 0.0
    next_start: float = 0.0

    def started(self, now: float) -> None:
        self.started_at = now

    def died(self, now: float) -> float:
        """Note a death; returns the delay before the next start."""
        if now - self.started_at >= STEADY_SECONDS:
            self.deaths = 0
        delay = min(RESTART_DELAY_SECONDS * 2 ** self.deaths, MAX_RESTART_DELAY_SECONDS)
        self.deaths += 1
        self.next_start = now + delay
        return delay


@dataclass
class Child:
    """One supervised process: what it runs, its current process, its backoff."""

    name: str
    run: Callable[[], int | None]
    process: child_processes.ForkedProcess | None = None
    backoff: Backoff = field(default_factory=Backoff)


class Supervisor:
    """Starts child processes, restarts any that die, stops them together.

    The embedded Redis, when there is one, is watched in the same loop: it
    is restarted on its socket after its own backoff, and stopped after the
    children, which may write to it until they have stopped.
    """

    def __init__(self, children: dict[str, Callable[[], int | None]], redis=None):
        self.children = {name: Child(name, run) for name, run in children.items()}
        self.redis = redis
        self.redis_backoff = Backoff()
        self.redis_waiting_since: float | None = None  # restarted, not answering yet
        self.stopping = False

    def spawn(self, child: Child) -> None:
        child.process = child_processes.fork(child.name, child.run)
        child.backoff.started(time.monotonic())
        logger.info("started %s (pid %d)", child.name, child.process.pid)

    def run(self) -> int:
        for child in self.children.values():
            self.spawn(child)
        while not self.stopping:
            time.sleep(POLL_SECONDS)
            if self.stopping:
                break
            now = time.monotonic()
            if self.redis is not None:
                self.watch_redis(now)
            for child in self.children.values():
                self.watch(child, now)
        return self.stop()

    def watch(self, child: Child, now: float) -> None:
        if child.process is not None:
            code = child.process.poll()
            if code is None:
                return
            delay = child.backoff.died(now)
            logger.warning("%s (pid %d) exited with %s; restarting in %.0f s", child.name, child.process.pid,
                           code, delay)
            child.process = None
        if now >= child.backoff.next_start:
            self.spawn(child)

    def watch_redis(self, now: float) -> None:
        if self.redis.process is not None:
            code = self.redis.exit_code()
            if code is None:
                if self.redis_waiting_since is not None and self.redis.answers(timeout=0.2):
                    logger.warning("embedded Redis (pid %d) answers again at %s after %.1f s",
                                   self.redis.pid, self.redis.socket_file, now - self.redis_waiting_since)
                    self.redis_waiting_since = None
                return
            delay = self.redis_backoff.died(now)
            logger.warning("embedded Redis (pid %d) exited with %s; restarting it in %.0f s on %s",
                           self.redis.pid, code, delay, self.redis.socket_file)
            self.redis.process = None
            if self.redis_waiting_since is None:
                self.redis_waiting_since = now
        if now >= self.redis_backoff.next_start:
            self.redis.start()
            self.redis_backoff.started(now)

    def stop(self) -> int:
        """Stop every child (SIGTERM, then SIGKILL after the grace period),
        then the embedded Redis. Children stop in parallel; the time is
        that of the slowest (a worker finishing its job, gunicorn's
        graceful stop)."""
        running = [child for child in self.children.values()
                   if child.process is not None and child.process.poll() is None]
        for child in running:
            child.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in running:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time; killing it", child.name)
                child.process.kill()
                child.process.wait()
        return 0


def run(worker_count: int | None = None) -> int:
    """Run the whole monitor until interrupted; returns the exit code."""
    try:
        settings = load_settings()
        # One worker by default: it starts each check at its due time and
        # hands checks still running to a thread, so one keeps 20,000
        # endpoints at 60 s (docs/performance.md); each more costs about
        # 30 MB.
        worker_count = worker_count or _env_int("WORKER_PROCESSES", 1)
        # One web worker (of WEB_THREADS threads) by default, for the same
        # reason: a worker serving the pages holds 25 to 35 MB of its own.
        web_concurrency = _env_int("WEB_CONCURRENCY", 1)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        lock = claim(settings.data_dir, database_url=settings.database_url,
                     holder={"pid": os.getpid(), "host": settings.host, "port": settings.port,
                             "syncApiPort": settings.sync_api_port})
    except DataDirectoryError as exc:
        print(f"data directory error: {exc}", file=sys.stderr)
        return 2
    # Signals are handled from the start: a stop during set-up still stops
    # the embedded Redis.
    supervisor: Supervisor | None = None
    stop_requested = False

    def stop(signum, frame):
        nonlocal stop_requested
        logger.info("stopping (signal %d)", signum)
        stop_requested = True
        if supervisor is not None:
            supervisor.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    embedded = None
    try:
        if settings.embedded_redis:
            from app.embedded_redis import EmbeddedRedis

            embedded = EmbeddedRedis(settings.data_dir)
            embedded.stop_orphans()
            embedded.start()
            if not embedded.wait_until_answering(stopping=lambda: stop_requested):
                if stop_requested:
                    return 0
                print(f"the embedded Redis did not start (exit code {embedded.exit_code()}); its output is above",
                      file=sys.stderr)
                return 1
            os.environ["REDIS_URL"] = embedded.url  # the children's, as they are forked
            logger.info("embedded Redis at %s", embedded.socket_file)

        code = set_up(settings)
        if code or stop_requested:
            return code
        state = preload()
        child_processes.share_what_is_loaded()
        if stop_requested:
            return 0
        logger.info("instance %s (%s, %s) starting: UI at http://%s:%d/, sync API on port %d",
                    state["instance_id"], state["role"], settings.instance_location,
                    settings.host, settings.port, settings.sync_api_port)
        supervisor = Supervisor(child_processes_for(settings, worker_count, web_concurrency), redis=embedded)
        supervisor.stopping = stop_requested  # a signal since the check above
        return supervisor.run()
    finally:
        if embedded is not None:
            embedded.stop()
        lock.release()


def _env_int(name: str, default: int) -> int:
    """A process count from the environment, 1 to 64."""
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not 1 <= value <= 64:
        raise ConfigError(f"{name} must be from 1 to 64, got {raw!r}")
    return value
