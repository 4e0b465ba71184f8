"""Configuration as code: the whole configuration exported as a document and
applied back, on SQLite and (with TEST_DATABASE_URL) PostgreSQL.

A round trip to a fresh database gives the same configuration; applying a
document twice changes nothing the second time; a dry run changes nothing;
every problem names its line and nothing of a bad document is applied;
masked secrets keep the stored values and are refused where none is
stored; a dependent refuses; the JSON API and the command line (a real
process) do the same.
"""
from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from app.checks import MASK
from app.extensions import db
from app.models import Endpoint, InstanceConfig, NotificationService
from app.notifiers import SECRET_MASK
from tests.conftest import ROOT, copy_template, make_app, migrate, reset_postgres

ADMIN = ("admin@example.org", "correct horse battery")
VIEWER = ("viewer@example.org", "viewer password 123")
SECRETS = ("T0KEN-s3cret", "b34rer-s3cret", "p4ss-s3cret", "k3y-s3cret", "s4sl-s3cret")


def basic(email, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request):
    """A standalone app with an administrator and a viewer."""
    from app.services.accounts import create_user

    application = request.getfixturevalue("app" if request.param == "sqlite" else "pg_app")
    with application.app_context():
        create_user(*ADMIN, is_admin=True)
        create_user(*VIEWER, is_admin=False)
    return application


def fresh_app(application, tmp_path: Path):
    """Another app on an empty, migrated database of the same kind: for
    PostgreSQL the same database wiped and migrated again."""
    url = application.config["SQLALCHEMY_DATABASE_URI"]
    with application.app_context():
        db.session.remove()
        db.engine.dispose()
    if url.startswith("postgresql"):
        reset_postgres(url)
        other = make_app(tmp_path / "fresh", {"DATABASE_URL": url})
    else:
        other = make_app(tmp_path / "fresh")
    migrate(other)
    return other


def configure(application):
    """A configuration with something of every kind, secrets included."""
    from app.services import endpoints, notifications, status_pages

    with application.app_context():
        hook = notifications.create_service({
            "name": "Ops hook", "kind": "webhook", "isDefault": True,
            "config": {"url": "http://127.0.0.1:9/hook?token=T0KEN-s3cret",
                       "headers": {"Authorization": "Bearer b34rer-s3cret"}, "timeoutSeconds": 5}})
        notifications.create_service({"name": "Mail", "kind": "apprise", "isEnabled": False,
                                      "config": {"url": "mailto://ops:p4ss-s3cret@mail.example.org"}})
        endpoints.create_endpoint({
            "name": "Shop", "checkType": "http", "target": "https://shop:p4ss-s3cret@shop.example.org/health",
            "group": "Public", "intervalSeconds": 30, "failureThreshold": 3, "reminderIntervalMinutes": 60,
            "options": {"headers": {"X-Api-Key": "k3y-s3cret", "Accept": "text/plain"}, "keyword": "ok",
                        "expected_status_codes": [200, "300-399"]},
            "consensusRule": "atLeast:1", "alertOnPartial": True, "certExpiryDays": 30,
            "notificationServiceIds": [hook.id]})
        endpoints.create_endpoint({"name": "Database", "checkType": "tcp", "target": "127.0.0.1", "port": 5432,
                                   "isPaused": True, "notificationServiceIds": []})
        endpoints.create_endpoint({
            "name": "Events", "checkType": "kafka_producer", "target": "127.0.0.1:9092",
            "options": {"topic": "health", "sasl_mechanism": "PLAIN", "sasl_username": "monitor",
                        "sasl_password": "s4sl-s3cret", "security_protocol": "SASL_PLAINTEXT"}})
        status_pages.set_published("Public", True)
        from app.services import maintenance

        shop_id = db.session.execute(db.select(Endpoint.id).where(Endpoint.name == "Shop")).scalar_one()
        maintenance.create_window({"title": "Shop upgrade", "startsAt": "2031-03-01T02:00:00Z",
                                   "endsAt": "2031-03-01T04:00:00Z", "endpointIds": [shop_id]})
        maintenance.create_window({"title": "Weekly backup", "cronExpression": "0 3 * * 0",
                                   "timeZone": "Europe/Berlin", "durationMinutes": 45, "groups": ["Public"],
                                   "description": "Sundays, while the database is copied"})


def exported(application, *, with_secrets=True) -> dict:
    from app.services import config_documents

    with application.app_context():
        return config_documents.export_document(with_secrets=with_secrets)


def yaml_of(application, *, with_secrets=False) -> str:
    from app.services import config_documents

    with application.app_context():
        return config_documents.to_yaml(config_documents.export_document(with_secrets=with_secrets))


def apply(application, text, **flags):
    from app.services import config_documents

    with application.app_context():
        return config_documents.import_document(config_documents.parse_yaml(text), **flags)


def problems_of(application, text, **flags):
    from app.services import config_documents

    with pytest.raises(config_documents.InvalidDocument) as caught:
        apply(application, text, **flags)
    return caught.value.problems


def version(application) -> int:
    from app.services import configuration

    with application.app_context():
        return configuration.config_version()


def line_of(text: str, needle: str, after: str = "") -> int:
    """The 1-based line of the first ``needle`` after ``after``."""
    start = text.index(after) if after else 0
    return text[:text.index(needle, start)].count("\n") + 1


# --- round trip, idempotence, dry run -------------------------------------------

def test_it_round_trips_to_a_fresh_database(store, tmp_path):
    configure(store)
    text = yaml_of(store, with_secrets=True)
    before = exported(store)
    other = fresh_app(store, tmp_path)
    outcome = apply(other, text)
    assert outcome.sections["endpoints"].added == ["Database", "Events", "Shop"]
    assert outcome.sections["notificationServices"].added == ["Mail", "Ops hook"]
    assert outcome.sections["statusPages"].added == ["Public"]
    assert outcome.sections["maintenanceWindows"].added == ["Shop upgrade", "Weekly backup"]
    assert exported(other) == before
    with other.app_context():
        shop = db.session.execute(db.select(Endpoint).where(Endpoint.name == "Shop")).scalar_one()
        assert shop.target == "https://shop:p4ss-s3cret@shop.example.org/health"
        assert [s.name for s in shop.notification_services] == ["Ops hook"]
        db.session.remove()
        db.engine.dispose()


def test_applying_the_same_document_twice_changes_nothing_the_second_time(store):
    configure(store)
    text = yaml_of(store)
    start = version(store)
    outcome = apply(store, text)
    assert not outcome.changed_anything
    assert outcome.sections["endpoints"].unchanged == 3
    assert version(store) == start
    changed = text.replace("intervalSeconds: 30", "intervalSeconds: 45").replace(
        "isEnabled: false", "isEnabled: true")
    first = apply(store, changed)
    assert first.sections["endpoints"].changed == [("Shop", ["intervalSeconds"])]
    assert first.sections["notificationServices"].changed == [("Mail", ["isEnabled"])]
    assert version(store) == start + 1  # two sections changed, one version
    second = apply(store, changed)
    assert not second.changed_anything
    assert version(store) == start + 1


def test_a_dry_run_says_what_would_change_and_changes_nothing(store):
    configure(store)
    document = yaml.safe_load(yaml_of(store))
    document["endpoints"] = [e for e in document["endpoints"] if e["name"] != "Database"]
    document["endpoints"][0]["failureThreshold"] = 2  # Events
    document["endpoints"].append({"name": "Gateway", "checkType": "ping", "target": "127.0.0.1"})
    text = yaml.safe_dump(document, sort_keys=False)
    before, start = exported(store), version(store)
    outcome = apply(store, text, dry_run=True, prune=True)
    endpoints = outcome.sections["endpoints"]
    assert (endpoints.added, endpoints.changed, endpoints.removed, endpoints.unchanged) == (
        ["Gateway"], [("Events", ["failureThreshold"])], ["Database"], 1)
    assert "- endpoints: Database" in outcome.details()
    assert exported(store) == before
    assert version(store) == start
    applied = apply(store, text, prune=True)
    assert applied.sections["endpoints"].removed == ["Database"]
    assert sorted(e["name"] for e in exported(store)["endpoints"]) == ["Events", "Gateway", "Shop"]


def test_without_prune_what_the_document_leaves_out_stays(store):
    configure(store)
    outcome = apply(store, "endpoints:\n  - {name: Extra, checkType: ping, target: 127.0.0.1}\n")
    assert outcome.sections["endpoints"].added == ["Extra"]
    assert outcome.sections["endpoints"].removed == []
    assert len(exported(store)["endpoints"]) == 4
    with store.app_context():  # a new endpoint that names none gets the default services
        extra = db.session.execute(db.select(Endpoint).where(Endpoint.name == "Extra")).scalar_one()
        assert [s.name for s in extra.notification_services] == ["Ops hook"]


# --- errors: lines, all or nothing --------------------------------------------------

def test_a_yaml_syntax_error_names_its_line_and_column(store):
    text = "version: 1\nendpoints:\n  - name: A\n    target: [unclosed\n  - name: B\n"
    problems = problems_of(store, text)
    assert len(problems) == 1
    assert problems[0].line == 5 and problems[0].column is not None
    assert "not valid YAML" in problems[0].message


def test_a_bad_item_in_the_middle_applies_nothing_and_names_its_lines(store):
    configure(store)
    document = yaml.safe_load(yaml_of(store))
    shop = next(e for e in document["endpoints"] if e["name"] == "Shop")
    shop["intervalSeconds"] = 600  # a good change that must not be applied either
    document["endpoints"][1:1] = [
        {"name": "Good one", "checkType": "ping", "target": "127.0.0.1"},
        {"name": "Bad one", "checkType": "tcp", "target": "127.0.0.1", "port": 70000, "intervalSeconds": 2},
        {"name": "Good two", "checkType": "ping", "target": "127.0.0.2", "notificationServices": ["Nobody"]},
    ]
    document["statusPages"].append({"group": "Nowhere"})
    text = yaml.safe_dump(document, sort_keys=False)
    before, start = exported(store), version(store)
    problems = problems_of(store, text, prune=True)
    by_path = {p.path: p for p in problems}
    bad_item = line_of(text, "name: Bad one")
    assert by_path["endpoints[2].port"].line == line_of(text, "port: 70000")
    assert by_path["endpoints[2].port"].message == "must be between 1 and 65535"
    assert by_path["endpoints[2].intervalSeconds"].line == line_of(text, "intervalSeconds: 2", after="Bad one")
    assert by_path["endpoints[2].port"].item_line == bad_item
    assert by_path["endpoints[3].notificationServices"].message == "names no notification service called 'Nobody'"
    assert "endpoints[3].notificationServices" in by_path
    # Group checks wait for valid endpoints, so the status page is not blamed yet.
    assert [p.line for p in problems] == sorted(p.line for p in problems)
    assert exported(store) == before
    assert version(store) == start


def test_unknown_fields_sections_and_repeated_names_are_named_with_their_lines(store):
    text = ("version: 1\n"
            "endpoint:\n  - {name: X}\n"
            "endpoints:\n"
            "  - name: A\n    checkType: ping\n    target: 127.0.0.1\n    colour: red\n"
            "  - name: A\n    checkType: ping\n    target: 127.0.0.2\n")
    problems = problems_of(store, text)
    assert problems[0].path == "endpoint" and problems[0].line == 2
    assert "is not a section" in problems[0].message
    text = text.replace("endpoint:\n  - {name: X}\n", "")
    problems = problems_of(store, text)
    assert [(p.path, p.line) for p in problems] == [("endpoints[0].colour", 6), ("endpoints[1].name", 7)]
    assert problems[0].message == "is not a field of an endpoint"
    assert "already the name of endpoints[0] (line 3)" in problems[1].message


def test_a_status_page_of_a_group_no_endpoint_is_in_is_refused(store):
    configure(store)
    text = "statusPages:\n  - group: Public\n  - group: Nowhere\n"
    problems = problems_of(store, text)
    assert [(p.path, p.line) for p in problems] == [("statusPages[1].group", 3)]


def test_aliases_are_refused_before_they_can_expand(store):
    text = ("endpoints:\n  - &a {name: A, checkType: ping, target: 127.0.0.1, options: &o {}}\n"
            "  - {name: B, checkType: ping, target: 127.0.0.1, options: *o}\n")
    problems = problems_of(store, text)
    assert "alias" in problems[0].message and problems[0].line == 3


# --- secrets -----------------------------------------------------------------------

def test_an_export_without_secrets_shows_none_and_importing_it_keeps_them(store):
    configure(store)
    text = yaml_of(store)
    for secret in SECRETS:
        assert secret not in text
    assert f"https://{MASK}@shop.example.org/health" in text
    assert f"Authorization: {SECRET_MASK}" in text
    with_secrets = exported(store)
    outcome = apply(store, text)
    assert not outcome.changed_anything
    assert exported(store) == with_secrets


def test_a_masked_secret_with_nothing_stored_to_keep_is_refused(store, tmp_path):
    configure(store)
    text = yaml_of(store)
    other = fresh_app(store, tmp_path)
    problems = problems_of(other, text)
    paths = {p.path for p in problems}
    assert {"notificationServices[0].config.url", "notificationServices[1].config.url",
            "notificationServices[1].config.headers.Authorization", "endpoints[1].options.sasl_password",
            "endpoints[2].target", "endpoints[2].options.headers.X-Api-Key"} <= paths
    assert all(p.line is not None for p in problems)
    assert exported(other, with_secrets=True)["endpoints"] == []
    with other.app_context():
        db.session.remove()
        db.engine.dispose()


def test_a_changed_secret_is_named_but_never_shown(store):
    configure(store)
    text = yaml_of(store).replace(f"X-Api-Key: '{MASK}'", "X-Api-Key: n3w-s3cret")
    outcome = apply(store, text, dry_run=True)
    assert outcome.sections["endpoints"].changed == [("Shop", ["options.headers"])]
    assert "n3w-s3cret" not in str(outcome.to_dict()) + "\n".join(outcome.details())


# --- who may import ------------------------------------------------------------------

def test_a_dependent_refuses_an_import(store):
    from app.services import config_documents, configuration

    configure(store)
    text = yaml_of(store).replace("intervalSeconds: 30", "intervalSeconds: 45")
    with store.app_context():
        configuration.set_role("dependent", new_epoch=1, new_primary_url="http://primary.test:3002")
        db.session.commit()
    before = exported(store)
    with pytest.raises(config_documents.ImportRefused, match="http://primary.test:3002"):
        apply(store, text)
    response = store.test_client().post("/api/v1/config", data=text, headers={
        **basic(*ADMIN), "Content-Type": "application/yaml"})
    assert response.status_code == 409 and response.get_json()["error"] == "read_only"
    assert exported(store) == before


# --- the JSON API ---------------------------------------------------------------------

def test_the_api_exports_json_or_yaml_with_secrets_only_when_asked(store):
    configure(store)
    api = store.test_client()
    answer = api.get("/api/v1/config", headers=basic(*ADMIN))
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    assert answer.get_json() == exported(store, with_secrets=False)
    assert not any(secret in answer.get_data(as_text=True) for secret in SECRETS)
    as_yaml = api.get("/api/v1/config", headers={**basic(*ADMIN), "Accept": "application/yaml"})
    assert as_yaml.mimetype == "application/yaml"
    assert yaml.safe_load(as_yaml.get_data(as_text=True)) == exported(store, with_secrets=False)
    secret = api.get("/api/v1/config?withSecrets=true", headers=basic(*ADMIN))
    assert secret.get_json() == exported(store, with_secrets=True)
    assert api.get("/api/v1/config?withSecrets=maybe", headers=basic(*ADMIN)).status_code == 400
    for path in ("/api/v1/config", "/api/v1/config?withSecrets=true"):
        refused = api.get(path, headers=basic(*VIEWER))
        assert refused.status_code == 403 and refused.get_json()["error"] == "forbidden"
    assert api.get("/api/v1/config").status_code == 401


def test_the_api_imports_yaml_and_json_with_a_dry_run(store):
    configure(store)
    api = store.test_client()
    document = exported(store, with_secrets=False)
    next(e for e in document["endpoints"] if e["name"] == "Shop")["intervalSeconds"] = 120
    start = version(store)
    dry = api.post("/api/v1/config?dryRun=true", json=document, headers=basic(*ADMIN))
    assert dry.status_code == 200
    assert dry.get_json()["sections"]["endpoints"]["changed"] == [{"name": "Shop", "fields": ["intervalSeconds"]}]
    assert dry.get_json()["dryRun"] is True and version(store) == start
    done = api.post("/api/v1/config", data=yaml.safe_dump(document), headers={
        **basic(*ADMIN), "Content-Type": "application/yaml"})
    assert done.status_code == 200 and done.get_json()["applied"] is True
    assert done.get_json()["configVersion"] == start + 1
    again = api.post("/api/v1/config", json=document, headers=basic(*ADMIN))
    assert again.get_json()["applied"] is False and version(store) == start + 1


def test_the_api_names_the_line_of_a_problem_and_applies_nothing(store):
    configure(store)
    api = store.test_client()
    text = yaml_of(store).replace("intervalSeconds: 30", "intervalSeconds: 3")
    before = exported(store)
    answer = api.post("/api/v1/config", data=text, headers={**basic(*ADMIN), "Content-Type": "text/yaml"})
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["problems"][0]["path"] == "endpoints[2].intervalSeconds"
    assert body["problems"][0]["line"] == line_of(text, "intervalSeconds: 3")
    assert f"line {line_of(text, 'intervalSeconds: 3')}" in body["message"]
    bad_json = api.post("/api/v1/config", data='{"endpoints": [\n  {"name": 1,}\n]}',
                        headers={**basic(*ADMIN), "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.get_json()["problems"][0]["line"] == 2
    assert exported(store) == before


def test_the_api_refuses_viewers_other_media_types_big_bodies_and_floods(store):
    api = store.test_client()
    text = "endpoints: []\n"
    viewer = api.post("/api/v1/config", data=text, headers={**basic(*VIEWER), "Content-Type": "application/yaml"})
    assert viewer.status_code == 403
    plain = api.post("/api/v1/config", data=text, headers={**basic(*ADMIN), "Content-Type": "text/plain"})
    assert plain.status_code == 415
    store.config["CONFIG_DOCUMENT_MAX_BYTES"] = 1000
    big = api.post("/api/v1/config", data="# " + "x" * 2000 + "\n", headers={
        **basic(*ADMIN), "Content-Type": "application/yaml"})
    assert big.status_code == 413
    statuses = [api.get("/api/v1/config", headers=basic(*ADMIN)).status_code for _ in range(12)]
    assert 429 in statuses
    limited = api.get("/api/v1/config", headers=basic(*ADMIN))
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


# --- the command line, as a real process ----------------------------------------------

def run_cli(data_dir: Path, *args: str, env: dict | None = None, application=None) -> subprocess.CompletedProcess:
    """``python -m app ARGS`` on ``data_dir`` (and on ``application``'s
    database when that is not the directory's SQLite file: PostgreSQL)."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("DATABASE_URL", "DATABASE_PATH", "REDIS_URL")}
    environment.update({"DATA_DIR": str(data_dir), "SECRET_KEY": "test-secret-key-0123456789", **(env or {})})
    uri = application.config["SQLALCHEMY_DATABASE_URI"] if application is not None else "sqlite:"
    if not uri.startswith("sqlite:"):
        environment["DATABASE_URL"] = uri
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)


def test_the_command_line_round_trips_through_a_file(app, tmp_path, migrated_sqlite_template):
    configure(app)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    exported_file = tmp_path / "config.yaml"
    done = run_cli(tmp_path, "config", "export", str(exported_file), "--with-secrets", application=app)
    assert done.returncode == 0, done.stderr
    assert oct(exported_file.stat().st_mode & 0o777) == "0o600"
    assert "s4sl-s3cret" in exported_file.read_text()

    target_dir = tmp_path / "target"
    target_dir.mkdir()
    copy_template(migrated_sqlite_template, target_dir)
    other = make_app(target_dir)
    with other.app_context():  # a copied template shares its instance id: give this one its own
        db.session.execute(db.update(InstanceConfig).where(InstanceConfig.key == "instance_id")
                           .values(value=str(uuid.uuid4())))
        db.session.commit()
        db.session.remove()
        db.engine.dispose()

    dry = run_cli(target_dir, "config", "import", str(exported_file), "--dry-run", application=other)
    assert dry.returncode == 0, dry.stderr
    assert "+ endpoints: Shop" in dry.stdout and "dry run: nothing was changed" in dry.stdout
    assert exported(other)["endpoints"] == []
    applied = run_cli(target_dir, "config", "import", str(exported_file), application=other)
    assert applied.returncode == 0, applied.stderr
    assert "endpoints: 3 added, 0 changed, 0 removed, 0 unchanged" in applied.stdout
    again = run_cli(target_dir, "config", "import", str(exported_file), application=other)
    assert "endpoints: 0 added, 0 changed, 0 removed, 3 unchanged" in again.stdout
    assert "nothing to change" in again.stdout
    assert exported(other) == exported(app)

    broken = tmp_path / "broken.yaml"
    broken.write_text(exported_file.read_text().replace("port: 5432", "port: 0"))
    failed = run_cli(target_dir, "config", "import", str(broken), application=other)
    assert failed.returncode == 2
    assert f"{broken}:{line_of(broken.read_text(), 'port: 0')}:" in failed.stderr
    assert "endpoints[0].port must be between 1 and 65535" in failed.stderr
    assert "nothing was applied" in failed.stderr
    with other.app_context():
        assert db.session.execute(db.select(NotificationService.name).order_by(NotificationService.name)
                                  ).scalars().all() == ["Mail", "Ops hook"]
        db.session.remove()
        db.engine.dispose()


# --- maintenance windows ------------------------------------------------------------

def test_maintenance_windows_are_matched_by_title_and_name_their_endpoints(store):
    configure(store)
    text = yaml_of(store)
    assert "- Shop" in text.split("maintenanceWindows:")[1]
    start = version(store)
    assert not apply(store, text).changed_anything and version(store) == start
    # Unquoted, YAML reads the times as timestamps; they are taken as written.
    moved = text.replace("startsAt: '2031-03-01T02:00:00+00:00'", "startsAt: 2031-03-01T01:00:00Z")
    assert moved != text
    outcome = apply(store, moved)
    assert outcome.sections["maintenanceWindows"].changed == [("Shop upgrade", ["startsAt"])]
    assert version(store) == start + 1
    added = moved + ("- title: Kafka move\n  startsAt: '2031-04-01T00:00:00Z'\n  endsAt: '2031-04-01T01:00:00Z'\n"
                     "  endpoints: [Events, Nowhere]\n")
    problems = problems_of(store, added)
    assert [(p.path, p.line, p.message) for p in problems] == [
        ("maintenanceWindows[2].endpoints", line_of(added, "endpoints: [Events, Nowhere]"),
         "names no endpoint called 'Nowhere'")]
    pruned = apply(store, moved.split("maintenanceWindows:")[0] + "maintenanceWindows: []\n", prune=True)
    assert pruned.sections["maintenanceWindows"].removed == ["Shop upgrade", "Weekly backup"]
