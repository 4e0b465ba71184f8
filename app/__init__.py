"""Application factory."""
from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.config import ConfigError, Settings, load_settings, secret_key_for, secrets_keys_for
from app.extensions import db
from app.secret_box import init_app as init_secret_box

__version__ = "0.1.0"

# What each process serves: the web UI and JSON API on PORT, the sync API on
# SYNC_API_PORT, nothing for workers and the clock.
SURFACES = {
    "web": ("ui", "admin", "api"),
    "sync": ("sync_api",),
    "none": (),
}


def create_app(config: dict | None = None, *, serve: str = "web", settings: Settings | None = None,
               migrations: bool = True) -> Flask:
    """Build the app. ``config`` overrides Flask config (tests);
    ``settings`` replaces the environment's settings (tests, CLI);
    ``migrations`` binds Flask-Migrate (``upgrade`` and the ``db`` commands
    need it). Serving processes leave it out: alembic and what it imports
    (mako, pygments) are about 11 MB they never use."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config.update(
        SETTINGS=settings,
        SECRET_KEY=secret_key_for(settings),
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings.database_url),
        MAX_CONTENT_LENGTH=1024 * 1024,
        SYNC_TOKEN_TTL=settings.sync_token_ttl,
        JSON_SORT_KEYS=False,
    )
    if config:
        app.config.update(config)
    init_secret_box(app, *secrets_keys_for(settings))
    if settings.trusted_proxies:
        # Behind nginx: take the client address and scheme from the proxy's
        # headers (only from as many proxies as configured), so rate limits
        # see real clients and cookies are marked secure under HTTPS.
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)
    _configure_logging(settings.log_level)

    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        path = app.config["SQLALCHEMY_DATABASE_URI"][len("sqlite:///"):]
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)

    from app import models  # noqa: F401  (registers tables for Alembic)

    db.init_app(app)
    if migrations:
        from flask_migrate import Migrate

        Migrate(app, db, directory=_migrations_dir(), render_as_batch=True)

    from app.blueprints.errors import register_error_handlers
    from app.checks import public_target

    app.jinja_env.filters["public_target"] = public_target

    register_error_handlers(app)
    for name in SURFACES[serve]:
        _register_blueprint(app, name)

    from app.cli import register_cli

    register_cli(app)
    return app


def _register_blueprint(app: Flask, name: str) -> None:
    if name == "ui":
        from app.blueprints.ui import bp
    elif name == "admin":
        from app.blueprints.admin import bp, init_app

        init_app(app)
    elif name == "api":
        from app.blueprints.api import bp
    elif name == "sync_api":
        from app.blueprints.sync_api import bp
    else:
        raise ValueError(name)
    app.register_blueprint(bp)


def _engine_options(url: str) -> dict:
    if url.startswith("sqlite"):
        # Several processes share one SQLite file: wait for locks instead of
        # failing at once.
        return {"connect_args": {"timeout": 30}}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}


WAL_SIZE_LIMIT = 64 * 1024 * 1024


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    import sqlite3

    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the dashboard) run while workers write results.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # The write-ahead log is copied back into the database every 1,000
    # pages (4 MB) and cut back to 64 MB whenever it is reset, so a burst of
    # writes (pruning, an outbox after an outage) leaves no large file
    # behind; the clock's prune job also checkpoints it with TRUNCATE.
    cursor.execute("PRAGMA wal_autocheckpoint=1000")
    cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    cursor.close()


def _migrations_dir() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parent.parent / "migrations")


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    root.setLevel(level)
    # urllib3 logs every request's path at DEBUG, and a webhook's or a
    # target's token is often in it: that logger never goes below INFO.
    logging.getLogger("urllib3.connectionpool").setLevel(max(root.level, logging.INFO))


__all__ = ["ConfigError", "create_app", "__version__"]
