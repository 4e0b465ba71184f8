"""Command line: ``python -m app <command>`` (or ``flask --app wsgi <command>``).

``start`` runs the whole monitor; the other commands manage endpoints, users,
API keys and maintenance windows, and show results. ``db upgrade`` comes from Flask-Migrate.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import click
from flask import current_app
from flask.cli import ScriptInfo, with_appcontext
from sqlalchemy import select

from app.config import ConfigError


def _create_app():
    from app import create_app

    return create_app()


class _Commands(click.Group):
    """The project's commands, plus Flask-Migrate's ``db``, imported only
    when asked for: it loads alembic, which ``start`` must not hold."""

    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), "db"])

    def get_command(self, ctx, name):
        if name == "db":
            from flask_migrate.cli import db as db_group

            return db_group
        return super().get_command(ctx, name)


@click.group(cls=_Commands, help="Distributed endpoint monitor.")
@click.pass_context
def cli(ctx):
    """The monitor's own commands (a plain click group: Flask's options and
    commands, --app, --debug, run, shell, routes, are not the product's)."""
    if ctx.invoked_subcommand != "start":
        # A command prints its output alone: log lines go to stderr, and
        # only warnings unless LOG_LEVEL asks for more. ``start`` is a
        # server: its log is its output.
        os.environ.setdefault("LOG_LEVEL", "WARNING")
    ctx.obj = ScriptInfo(create_app=_create_app, set_debug_flag=False)


def register_cli(app) -> None:
    """Attach the project's commands to ``app.cli``."""
    app.cli.add_command(start_command)
    app.cli.add_command(endpoints_group)
    app.cli.add_command(results_command)
    app.cli.add_command(users_group)
    app.cli.add_command(api_keys_group)
    app.cli.add_command(init_command)
    app.cli.add_command(cluster_group)
    app.cli.add_command(config_group)
    app.cli.add_command(secrets_group)
    app.cli.add_command(maintenance_group)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.command("start")
@click.option("--workers", "worker_count", type=click.IntRange(1, 64), default=None,
              help="RQ worker processes (default: WORKER_PROCESSES or 1).")
def start_command(worker_count):
    """Start everything: web, sync API, workers, clock (and embedded Redis)."""
    from app.launcher import run

    sys.exit(run(worker_count=worker_count))


@click.command("init")
@with_appcontext
def init_command():
    """Create or upgrade the database and this instance's identity."""
    from app.launcher import prepare_database

    state = prepare_database(current_app)
    click.echo(f"database ready; instance {state['instance_id']} ({state['role']})")


# --- endpoints ---------------------------------------------------------------

@click.group("endpoints")
def endpoints_group():
    """Add, list, pause and remove endpoints."""


def _refuse_on_dependent():
    from app.services import configuration

    state = configuration.snapshot()
    if not state.accepts_configuration:
        _fail(f"this instance is {state.role}; change configuration on the primary"
              + (f" at {state.primary_url}" if state.is_dependent and state.primary_url else ""))


@endpoints_group.command("add")
@click.option("--name", required=True)
@click.option("--type", "check_type", required=True,
              type=click.Choice(["http", "tcp", "ping", "kafka_producer", "kafka_consumer"]))
@click.option("--target", required=True, help="URL, host, or Kafka bootstrap servers.")
@click.option("--port", type=int, default=None, help="TCP port (tcp checks).")
@click.option("--interval", type=int, default=60, show_default=True, help="Seconds between checks (>= 5).")
@click.option("--timeout", type=float, default=None,
              help="Seconds per check.  [default: 10, or half the interval if shorter]")
@click.option("--retries", "failure_threshold", type=int, default=1, show_default=True,
              help="Consecutive failures before DOWN.")
@click.option("--success-threshold", type=int, default=1, show_default=True,
              help="Consecutive successes before UP again.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A check option; VALUE is JSON if it parses, else a string. Repeatable.")
@click.option("--group", default=None)
@click.option("--consensus-rule", default="majority", show_default=True,
              help="When the locations make it DOWN: majority, or atLeast:N (atLeast:1: any location).")
@click.option("--location", "locations", multiple=True, metavar="INSTANCE_ID",
              help="An instance that checks it (repeatable); none given: every location.")
@click.option("--alert-on-partial", is_flag=True, help="Alert when only some locations see it DOWN.")
@click.option("--cert-expiry-days", type=int, default=14, show_default=True,
              help="Alert when an HTTPS certificate has fewer days left.")
@with_appcontext
def endpoints_add(name, check_type, target, port, interval, timeout, failure_threshold,
                  success_threshold, options, group, consensus_rule, locations, alert_on_partial,
                  cert_expiry_days):
    """Add an endpoint; it is checked at once."""
    from app.services.endpoints import InvalidEndpoint, create_endpoint

    _refuse_on_dependent()
    parsed = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--option must be KEY=VALUE, got {item!r}")
        try:
            parsed[key] = json.loads(value)
        except ValueError:
            parsed[key] = value
    try:
        endpoint = create_endpoint({
            "name": name, "checkType": check_type, "target": target, "port": port,
            "intervalSeconds": interval, "timeoutSeconds": timeout,
            "failureThreshold": failure_threshold, "successThreshold": success_threshold,
            "options": parsed, "group": group, "consensusRule": consensus_rule,
            "locations": list(locations) or None, "alertOnPartial": alert_on_partial,
            "certExpiryDays": cert_expiry_days,
        })
    except InvalidEndpoint as exc:
        _fail(str(exc))
    click.echo(f"added endpoint {endpoint.id}: {endpoint.name}")


@endpoints_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def endpoints_list(as_json):
    """List endpoints with their status."""
    from app.services.endpoints import list_endpoints

    found = list_endpoints()
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in found], indent=2))
        return
    if not found:
        click.echo("no endpoints")
        return
    click.echo(f"{'ID':>5}  {'STATUS':<8} {'TYPE':<15} {'NAME':<24} {'LAST':>9}  TARGET")
    for e in found:
        status = "PAUSED" if e.is_paused else e.status
        last = f"{e.last_response_time_ms:.0f} ms" if e.last_response_time_ms is not None else "-"
        target = f"{e.target}:{e.port}" if e.port else e.target
        click.echo(f"{e.id:>5}  {status:<8} {e.check_type:<15} {e.name[:24]:<24} {last:>9}  {target}")


def _endpoint(endpoint_id):
    from app.services.endpoints import get_endpoint

    endpoint = get_endpoint(endpoint_id)
    if endpoint is None:
        _fail(f"no endpoint with id {endpoint_id}")
    return endpoint


@endpoints_group.command("remove")
@click.argument("endpoint_id", type=int)
@with_appcontext
def endpoints_remove(endpoint_id):
    """Delete an endpoint and its results."""
    from app.services.endpoints import delete_endpoint

    _refuse_on_dependent()
    endpoint = _endpoint(endpoint_id)
    delete_endpoint(endpoint)
    click.echo(f"removed endpoint {endpoint_id}")


@endpoints_group.command("pause")
@click.argument("endpoint_id", type=int)
@with_appcontext
def endpoints_pause(endpoint_id):
    """Stop checking an endpoint."""
    from app.services.endpoints import set_paused

    _refuse_on_dependent()
    set_paused(_endpoint(endpoint_id), True)
    click.echo(f"paused endpoint {endpoint_id}")


@endpoints_group.command("resume")
@click.argument("endpoint_id", type=int)
@with_appcontext
def endpoints_resume(endpoint_id):
    """Check a paused endpoint again."""
    from app.services.endpoints import set_paused

    _refuse_on_dependent()
    set_paused(_endpoint(endpoint_id), False)
    click.echo(f"resumed endpoint {endpoint_id}")


@click.command("results")
@click.argument("endpoint_id", type=int)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def results_command(endpoint_id, limit, as_json):
    """Show an endpoint's recent results, newest first."""
    from app.services.results import recent_results

    endpoint = _endpoint(endpoint_id)
    rows = recent_results(endpoint.id, limit=limit)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo(f"no results yet for endpoint {endpoint_id}")
        return
    for r in rows:
        took = f"{r.response_time_ms:.1f} ms" if r.response_time_ms is not None else "-"
        reason = f"  {r.failure_reason}" if r.failure_reason else ""
        click.echo(f"{r.checked_at:%Y-%m-%d %H:%M:%S}Z  {r.status:<4}  {took:>10}  {r.location}{reason}")


# --- users and API keys ------------------------------------------------------

@click.group("users")
def users_group():
    """Manage the people who can sign in."""


@users_group.command("create")
@click.option("--email", required=True)
@click.password_option()
@click.option("--admin/--no-admin", default=True, show_default=True)
@with_appcontext
def users_create(email, password, admin):
    """Create a user (the API accepts their email and password)."""
    from app.services.accounts import InvalidAccount, create_user

    try:
        user = create_user(email, password, is_admin=admin)
    except InvalidAccount as exc:
        _fail(str(exc))
    click.echo(f"created user {user.email}")


@click.group("api-keys")
def api_keys_group():
    """Create and revoke API keys."""


@api_keys_group.command("create")
@click.option("--email", required=True, help="The user the key acts as.")
@click.option("--name", required=True, help="What the key is for.")
@with_appcontext
def api_keys_create(email, name):
    """Create an API key; it is printed once and never shown again."""
    from app.services.accounts import InvalidAccount, create_api_key

    try:
        _, key = create_api_key(email, name)
    except InvalidAccount as exc:
        _fail(str(exc))
    click.echo(key)


@api_keys_group.command("revoke")
@click.argument("key_id", type=int)
@with_appcontext
def api_keys_revoke(key_id):
    """Revoke an API key at once."""
    from app.services.accounts import InvalidAccount, revoke_api_key

    try:
        revoke_api_key(key_id)
    except InvalidAccount as exc:
        _fail(str(exc))
    click.echo(f"revoked API key {key_id}")


@api_keys_group.command("list")
@with_appcontext
def api_keys_list():
    """List API keys (never the keys themselves)."""
    from app.extensions import db
    from app.models import ApiKey

    for key in db.session.execute(select(ApiKey).order_by(ApiKey.id)).scalars():
        state = "revoked" if key.revoked_at else "active"
        click.echo(f"{key.id:>4}  {key.user.email:<30} {key.name:<20} {state}")


@click.group("cluster")
def cluster_group():
    """See the cluster, hand the primary role over by hand."""


@cluster_group.command("status")
@with_appcontext
def cluster_status():
    """This instance's role and epoch, the members, the latest transitions."""
    from app.services import configuration, failover

    state = configuration.snapshot()
    click.echo(f"this instance: {state.instance_id} is {state.role} at epoch {state.epoch}"
               + (f", following {state.primary_url}" if state.is_dependent else ""))
    for member in failover.members():
        click.echo(f"  {member.id}  {member.name:<20} {member.location:<16} order {member.failover_order:<4} "
                   f"{member.role:<10} {member.status}")
    for event in reversed(configuration.cluster_events(limit=10)):
        click.echo(f"  {event.at.isoformat(timespec='seconds')}  epoch {event.epoch:<4} {event.kind:<10} "
                   f"{event.detail}")


@cluster_group.command("promote")
@with_appcontext
def cluster_promote():
    """Make this instance the primary: the current primary hands over, then
    this one wins the next epoch's vote. Run it on the instance to promote."""
    from app.services import failover

    try:
        outcome = failover.promote_here()
    except failover.FailoverRefused as exc:
        _fail(str(exc))
    click.echo(f"this instance is now the primary at epoch {outcome['epoch']}")


@cluster_group.command("demote")
@with_appcontext
def cluster_demote():
    """Hand the primary role to the next live candidate in failover order.
    Run it on the primary."""
    from app.services import failover

    try:
        outcome = failover.demote_here()
    except failover.FailoverRefused as exc:
        _fail(str(exc))
    click.echo(f"{outcome['primaryId']} is now the primary at epoch {outcome['epoch']}")


# --- configuration as code ----------------------------------------------------

@click.group("config")
def config_group():
    """Export the configuration as YAML, or apply such a file."""


@config_group.command("export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True), default="-")
@click.option("--with-secrets", is_flag=True, help="Write secrets as they are (otherwise masked).")
@with_appcontext
def config_export(file, with_secrets):
    """Write the whole configuration as YAML to FILE (default: standard output)."""
    from app.services import config_documents

    text = config_documents.to_yaml(config_documents.export_document(with_secrets=with_secrets),
                                    header=config_documents.export_header(with_secrets=with_secrets))
    if file == "-":
        click.echo(text, nl=False)
        return
    # A file with secrets is readable by its owner alone.
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if with_secrets else 0o644)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    click.echo(f"wrote {file}", err=True)


@config_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("--prune", is_flag=True, help="The file is the whole configuration: remove what it does not name.")
@with_appcontext
def config_import(file, dry_run, prune):
    """Apply a configuration file (YAML or JSON) in one transaction."""
    from app.services import config_documents

    source = "<stdin>" if file == "-" else file
    try:
        with click.open_file(file, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {source}: {exc}")
    try:
        parsed = config_documents.parse_json(text) if file.endswith(".json") else config_documents.parse_yaml(text)
        outcome = config_documents.import_document(parsed, prune=prune, dry_run=dry_run)
    except config_documents.ImportRefused as exc:
        _fail(str(exc))
    except config_documents.InvalidDocument as exc:
        for line in exc.describe(source):
            click.echo(f"error: {line}", err=True)
        click.echo(f"nothing was applied ({len(exc.problems) + exc.more} problems)", err=True)
        sys.exit(2)
    for line in outcome.details():
        click.echo(line)
    click.echo(outcome.summary())
    if dry_run:
        click.echo("dry run: nothing was changed")
    elif outcome.changed_anything:
        click.echo(f"applied; configuration version {outcome.config_version}")
    else:
        click.echo("nothing to change")
# --- secrets at rest -----------------------------------------------------------
# On the group itself too, like the demo: generate-key needs no app (and so
# no valid SECRETS_KEY); rotate loads one through with_appcontext.

@click.group("secrets")
def secrets_group():
    """Encryption of the secrets stored in the database (SECRETS_KEY)."""


@secrets_group.command("generate-key")
def secrets_generate_key():
    """Print a new key for SECRETS_KEY (nothing is changed)."""
    from app.secret_box import generate_key

    click.echo(generate_key())


@secrets_group.command("rotate")
@with_appcontext
def secrets_rotate():
    """Re-encrypt every stored secret under the first key of SECRETS_KEY, in
    one transaction. Start every process with SECRETS_KEY=NEW,OLD first;
    afterwards OLD can be dropped."""
    from app.extensions import db
    from app.secret_box import SecretUnreadable, current_box
    from app.services import secrets_at_rest

    box = current_box()
    click.echo(f"re-encrypting every secret under the first of {len(box.keys)} keys from {box.source}")
    try:
        report = secrets_at_rest.rotate(db.session.connection(), progress=click.echo)
        db.session.commit()
    except SecretUnreadable as exc:
        db.session.rollback()
        _fail(f"{exc}; nothing was changed")
    click.echo(f"done: {report.secrets} secrets in {report.rewritten} rows re-encrypted"
               + (f", {report.plaintext} of them were plain text" if report.plaintext else ""))


cli.add_command(secrets_group)
# --- maintenance windows --------------------------------------------------------

@click.group("maintenance")
def maintenance_group():
    """List, add and remove maintenance windows (no alerts while one is on)."""


@maintenance_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def maintenance_list(as_json):
    """List maintenance windows, with the one in progress and the next."""
    from app.services import maintenance

    found = [maintenance.to_dict(w) for w in maintenance.list_windows()]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("no maintenance windows")
        return
    click.echo(f"{'ID':>5}  {'STATE':<12} {'TITLE':<24} {'SCHEDULE':<44} COVERS")
    for w in found:
        state = ("in progress" if w["inProgress"] else "scheduled" if w["nextStartsAt"]
                 else "over" if w["isActive"] else "off")
        schedule = (f"cron {w['cronExpression']} {w['timeZone']} {w['durationMinutes']} min"
                    if w["kind"] == "recurring" else f"{w['startsAt'][:16]} to {w['endsAt'][:16]} UTC")
        covers = ", ".join([f"#{i}" for i in w["endpointIds"]] + [f"group {g}" for g in w["groups"]])
        click.echo(f"{w['id']:>5}  {state:<12} {w['title'][:24]:<24} {schedule:<44} {covers}")


@maintenance_group.command("add")
@click.option("--title", required=True)
@click.option("--description", default=None)
@click.option("--start", "starts_at", default=None, metavar="TIME",
              help="One-off: ISO 8601 start, e.g. 2026-12-24T22:00 (read in --time-zone when it has no zone).")
@click.option("--end", "ends_at", default=None, metavar="TIME", help="One-off: ISO 8601 end.")
@click.option("--cron", "cron_expression", default=None, metavar="EXPR",
              help="Recurring: five cron fields, e.g. '0 2 * * 0' (Sundays at 02:00).")
@click.option("--duration", "duration_minutes", type=int, default=None, help="Recurring: minutes each lasts.")
@click.option("--time-zone", default=None, help="IANA zone the times are read in (default UTC).")
@click.option("--endpoint", "endpoint_ids", multiple=True, type=int, metavar="ID", help="Repeatable.")
@click.option("--group", "groups", multiple=True, metavar="NAME", help="Repeatable: every endpoint of the group.")
@click.option("--inactive", is_flag=True, help="Store it switched off.")
@with_appcontext
def maintenance_add(title, description, starts_at, ends_at, cron_expression, duration_minutes, time_zone,
                    endpoint_ids, groups, inactive):
    """Add a one-off (--start, --end) or recurring (--cron, --duration) window."""
    from app.services import maintenance

    _refuse_on_dependent()
    data = {"title": title, "description": description, "startsAt": starts_at, "endsAt": ends_at,
            "cronExpression": cron_expression, "durationMinutes": duration_minutes, "timeZone": time_zone,
            "endpointIds": list(endpoint_ids), "groups": list(groups), "isActive": not inactive}
    try:
        window = maintenance.create_window({k: v for k, v in data.items() if v is not None})
    except maintenance.InvalidMaintenanceWindow as exc:
        _fail(str(exc))
    click.echo(f"added maintenance window {window.id}: {window.title} ({maintenance.describe(window)})")


@maintenance_group.command("remove")
@click.argument("window_id", type=int)
@with_appcontext
def maintenance_remove(window_id):
    """Delete a maintenance window."""
    from app.services import maintenance

    _refuse_on_dependent()
    window = maintenance.get_window(window_id)
    if window is None:
        _fail(f"no maintenance window with id {window_id}")
    maintenance.delete_window(window)
    click.echo(f"removed maintenance window {window_id}")


# --- demo -------------------------------------------------------------------
# Added to the group itself, not in register_cli: the demo runs no app of
# its own in this process, so it needs none loaded.

@click.command("demo")
@click.option("--port", "first_port", type=click.IntRange(1024, 65530), default=None,
              help="First of the six loopback ports the instances take (web UI and sync API each); "
                   "default: 3001, or the next free block of ten.")
def demo_command(first_port):
    """Try it on this machine: a primary and two dependents (frankfurt,
    virginia, singapore) on loopback, each a full instance with its own data
    and embedded Redis, a local target and sample endpoints, one of them
    failing from singapore only (PARTIAL). Prints the dashboard's address
    and a password generated for the run; Ctrl-C stops everything and
    removes the temporary data."""
    from app.demo import run

    sys.exit(run(first_port=first_port))


cli.add_command(demo_command)


# --- backup and restore ---------------------------------------------------------
# On the group itself: they read the settings alone and load no app, so a
# restore works on a database the app could not open.

@click.command("backup")
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
def backup_command(destination):
    """Write a consistent backup of the database to DESTINATION while the
    instance runs (SQLite: online backup; PostgreSQL: pg_dump custom format)."""
    from app.backups import BackupError, backup
    from app.config import load_settings

    try:
        summary = backup(load_settings(), destination)
    except BackupError as exc:
        _fail(str(exc))
    click.echo(f"backup written: {summary.describe()}")


@click.command("restore")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Restore even while an instance runs on the data directory.")
def restore_command(source, force):
    """Replace the database with the backup SOURCE, after checking it;
    refused while the instance runs unless --force."""
    from app.backups import BackupError, restore
    from app.config import load_settings

    try:
        summary = restore(load_settings(), source, force=force)
    except BackupError as exc:
        _fail(str(exc))
    click.echo(f"restored from {summary.describe()}; start the instance to apply any newer migrations")


cli.add_command(backup_command)
cli.add_command(restore_command)


def main() -> None:
    """Entry point of ``python -m app``; configuration errors exit with 2."""
    # The same commands as ``flask --app wsgi``, plus Flask-Migrate's ``db``.
    register_cli(SimpleNamespace(cli=cli))
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        cli.main(prog_name="python -m app")
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)
    except (OperationalError, ProgrammingError) as exc:
        if not _no_tables_yet(exc):
            raise
        click.echo("error: the database has no tables yet; run `python -m app init` (or `start`) first", err=True)
        sys.exit(2)


def _no_tables_yet(exc) -> bool:
    """Whether a database error is a missing table (SQLite's words,
    PostgreSQL's SQLSTATE 42P01): a command run before the first start."""
    original = getattr(exc, "orig", None)
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return code == "42P01" or "no such table" in str(original)
