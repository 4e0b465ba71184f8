"""Importing a configuration document of many endpoints, and exporting it.

    .venv/bin/python -m bench.config_import --endpoints 1000 10000
    .venv/bin/python -m bench.config_import --endpoints 10000 --database-url postgresql://postgres@127.0.0.1:5432/bench

For each count:

1. Makes a fresh database (SQLite in a temporary ``DATA_DIR`` unless
   ``--database-url`` names a PostgreSQL database, whose public schema is
   dropped and re-created) and migrates it.
2. Writes a YAML document with two notification services and that many
   endpoints (http, tcp and ping in turn, in 20 groups, each naming one
   service, one group's status page published).
3. Times, in this process: reading the YAML; the first import (every item
   added, in one transaction); a dry run of the same document (every item
   unchanged); the second import (nothing changes); the export back to YAML.
4. Prints the figures and writes them as JSON to ``bench/results/``.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"


def document(count: int) -> str:
    """A document of ``count`` endpoints."""
    import yaml

    kinds = [
        lambda i: {"checkType": "http", "target": f"http://127.0.0.1:8080/health/{i}",
                   "options": {"keyword": "ok"}},
        lambda i: {"checkType": "tcp", "target": "127.0.0.1", "port": 1024 + i % 60000},
        lambda i: {"checkType": "ping", "target": f"127.0.{i // 250 % 250}.{i % 250 + 1}"},
    ]
    endpoints = [{"name": f"endpoint {i:05d}", **kinds[i % 3](i), "intervalSeconds": 60,
                  "group": f"group {i % 20:02d}", "notificationServices": ["Ops hook" if i % 2 else "Ops mail"]}
                 for i in range(count)]
    return yaml.safe_dump({
        "version": 1,
        "notificationServices": [
            {"name": "Ops hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}},
            {"name": "Ops mail", "kind": "apprise", "config": {"url": "mailto://ops:secret@mail.example.org"}},
        ],
        "endpoints": endpoints,
        "statusPages": [{"group": "group 00"}],
    }, sort_keys=False)


def fresh_app(data_dir: Path, database_url: str | None):
    from flask_migrate import upgrade
    from sqlalchemy import create_engine, text

    from app import create_app
    from app.config import load_settings
    from app.services import configuration

    env = {"DATA_DIR": str(data_dir), "SECRET_KEY": "bench-secret-key-0123456789", "LOG_LEVEL": "WARNING"}
    if database_url:
        engine = create_engine(database_url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        env["DATABASE_URL"] = database_url
    app = create_app(serve="none", settings=load_settings(env))
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        configuration.ensure_initialized()
    return app


def timed(action):
    started = time.perf_counter()
    value = action()
    return value, round(time.perf_counter() - started, 3)


def measure(count: int, database_url: str | None) -> dict:
    from app.extensions import db
    from app.services import config_documents, configuration

    text = document(count)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-config-"))
    try:
        app = fresh_app(data_dir, database_url)
        with app.app_context():
            parsed, parse_s = timed(lambda: config_documents.parse_yaml(text))
            first, first_s = timed(lambda: config_documents.import_document(parsed))
            assert len(first.sections["endpoints"].added) == count
            version = configuration.config_version()
            dry, dry_s = timed(lambda: config_documents.import_document(parsed, dry_run=True))
            assert dry.sections["endpoints"].unchanged == count
            second, second_s = timed(lambda: config_documents.import_document(parsed))
            assert not second.changed_anything and configuration.config_version() == version
            exported, export_s = timed(lambda: config_documents.to_yaml(config_documents.export_document()))
            db.session.remove()
            db.engine.dispose()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {"endpoints": count, "document_bytes": len(text.encode()), "parse_s": parse_s,
            "first_import_s": first_s, "dry_run_unchanged_s": dry_s, "second_import_s": second_s,
            "export_s": export_s, "export_bytes": len(exported.encode())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--database-url", default=None, help="a PostgreSQL database to use (its schema is wiped)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    database = "postgresql" if args.database_url else "sqlite"
    rows = [measure(count, args.database_url) for count in args.endpoints]
    print(f"{'endpoints':>9} {'MiB':>5} {'parse':>7} {'import':>7} {'dry run':>8} {'again':>7} {'export':>7}  ({database}, s)")
    for row in rows:
        print(f"{row['endpoints']:>9} {row['document_bytes'] / 2**20:>5.1f} {row['parse_s']:>7.2f} "
              f"{row['first_import_s']:>7.2f} {row['dry_run_unchanged_s']:>8.2f} {row['second_import_s']:>7.2f} "
              f"{row['export_s']:>7.2f}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"config-import-{database}.json"
    out.write_text(json.dumps({"database": database, "machine": platform.platform(),
                               "python": platform.python_version(), "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
