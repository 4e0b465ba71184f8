"""Secrets at rest: notification service settings, endpoint URL credentials,
secret options and headers, and a dependent's sync token are Fernet tokens
in the database and plain values to every reader; rotation under a second
key; a wrong or missing key is a clear error; the migration encrypts what
was stored in plain text (and its downgrade decrypts it); alerts and checks
go out with the decrypted secrets to real loopback peers; nothing secret is
logged. On SQLite, and on PostgreSQL when TEST_DATABASE_URL is set."""
from __future__ import annotations

import base64
import json
import logging
import shutil
import threading

import pytest
from cryptography.fernet import Fernet, InvalidToken
from flask_migrate import downgrade, upgrade
from sqlalchemy import select, text
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from app.checks import run_check
from app.config import ConfigError
from app.extensions import db
from app.models import Endpoint, NotificationService
from app.secret_box import SecretUnreadable, looks_encrypted
from app.services import configuration, secrets_at_rest
from tests.conftest import ROOT, make_app, migrate, reset_postgres
from tests.peers.smtp import SmtpServer
from tests.peers.webhook import WebhookReceiver

KEY_OLD = Fernet.generate_key().decode()
KEY_NEW = Fernet.generate_key().decode()
HOOK_TOKEN = "T0KEN-hook-s3cret"
BEARER = "Bearer b34rer-s3cret"
URL_PASSWORD = "pa55-url-s3cret"
API_KEY = "x-api-k3y-s3cret"
SASL_PASSWORD = "sasl-pa55-s3cret"
SYNC_TOKEN = "sync-t0ken-s3cret"
SECRETS = (HOOK_TOKEN, BEARER.split()[1], URL_PASSWORD, API_KEY, SASL_PASSWORD, SYNC_TOKEN)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path, migrated_sqlite_template):
    """A migrated database, and a way to open apps on it with chosen keys."""
    if request.param == "sqlite":
        shutil.copy(migrated_sqlite_template, tmp_path / "monitor.db")
        url = f"sqlite:///{tmp_path / 'monitor.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        reset_postgres(url)
    opened = []

    def open_app(keys: str | None = KEY_OLD, *, folder: str = "instance", **more):
        env = {"DATABASE_URL": url, **more}
        if keys is not None:
            env["SECRETS_KEY"] = keys
        application = make_app(tmp_path / folder, env)
        if request.param == "postgresql" and not opened:
            keep_logging(lambda: migrate(application))
        opened.append(application)
        return application

    open_app.dialect = request.param
    yield open_app
    for application in opened:
        with application.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def webhook():
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp_server():
    server = SmtpServer().start()
    yield server
    server.stop()


def keep_logging(action):
    # Migrations set logging up for alembic's command line; caplog needs its handlers back.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return action()
    finally:
        root.handlers[:], root.level = handlers, level


def store_secrets(application) -> dict:
    """One of each secret, stored through the services as the UI and API do."""
    from app.services.endpoints import create_endpoint
    from app.services.notifications import create_service

    with application.app_context():
        service = create_service({"name": "ops hook", "kind": "webhook", "config": {
            "url": f"http://127.0.0.1:9/hook?token={HOOK_TOKEN}", "headers": {"Authorization": BEARER}}})
        web = create_endpoint({"name": "shop", "checkType": "http",
                               "target": f"https://ops:{URL_PASSWORD}@shop.example.org/health",
                               "options": {"headers": {"X-Api-Key": API_KEY, "Accept": "text/plain"}}})
        kafka = create_endpoint({"name": "bus", "checkType": "kafka_producer", "target": "127.0.0.1:9092",
                                 "options": {"topic": "health", "security_protocol": "SASL_PLAINTEXT",
                                             "sasl_mechanism": "PLAIN", "sasl_username": "monitor",
                                             "sasl_password": SASL_PASSWORD}})
        configuration.set_state(configuration.SYNC_TOKEN, SYNC_TOKEN)
        db.session.commit()
        return {"service": service.id, "web": web.id, "kafka": kafka.id}


def raw(application, sql: str, **params) -> list[tuple]:
    """Rows as stored, read by plain SQL (JSON decoded as the driver hands it over)."""
    with application.app_context():
        rows = db.session.execute(text(sql), params).all()
        db.session.rollback()
    return [tuple(decoded(value) for value in row) for row in rows]


def decoded(value):
    if isinstance(value, str) and value[:1] in '{"[':
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def stored(application, made: dict) -> dict:
    [(config,)] = raw(application, "SELECT config FROM notification_services WHERE id = :id", id=made["service"])
    [(target, web_options)] = raw(application, "SELECT target, options FROM endpoints WHERE id = :id", id=made["web"])
    [(kafka_options,)] = raw(application, "SELECT options FROM endpoints WHERE id = :id", id=made["kafka"])
    [(token,)] = raw(application, "SELECT value FROM instance_config WHERE key = 'sync_token'")
    return {"config": config, "target": target, "userinfo": target.split("://", 1)[1].split("@")[0],
            "header": web_options["headers"]["X-Api-Key"], "accept": web_options["headers"]["Accept"],
            "sasl": kafka_options["sasl_password"], "username": kafka_options["sasl_username"], "token": token}


def tokens_of(place: dict) -> list[str]:
    return [place[name] for name in ("config", "userinfo", "header", "sasl", "token")]


def read_back(application, made: dict) -> dict:
    with application.app_context():
        db.session.expire_all()
        service = db.session.get(NotificationService, made["service"])
        web, kafka = db.session.get(Endpoint, made["web"]), db.session.get(Endpoint, made["kafka"])
        return {"config": service.config, "target": web.target, "header": web.options["headers"]["X-Api-Key"],
                "sasl": kafka.options["sasl_password"], "token": configuration.get_state(configuration.SYNC_TOKEN)}


PLAIN = {
    "config": {"url": f"http://127.0.0.1:9/hook?token={HOOK_TOKEN}", "headers": {"Authorization": BEARER},
               "timeoutSeconds": 10.0},
    "target": f"https://ops:{URL_PASSWORD}@shop.example.org/health",
    "header": API_KEY, "sasl": SASL_PASSWORD, "token": SYNC_TOKEN,
}


# --- stored as tokens, read as plain values ---------------------------------------


def test_every_secret_is_stored_as_a_fernet_token_and_read_as_the_plain_value(database):
    application = database(KEY_OLD)
    made = store_secrets(application)
    place = stored(application, made)

    whole = json.dumps(place)
    assert not [secret for secret in SECRETS if secret in whole]
    for token in tokens_of(place):
        assert looks_encrypted(token) and Fernet(KEY_OLD).decrypt(token.encode())
    assert json.loads(Fernet(KEY_OLD).decrypt(place["config"].encode())) == PLAIN["config"]
    # What is not secret stays readable to SQL: the URL's host, a plain header, the SASL user.
    assert place["target"].startswith("https://gAAAA") and place["target"].endswith("@shop.example.org/health")
    assert (place["accept"], place["username"]) == ("text/plain", "monitor")

    assert read_back(application, made) == PLAIN
    with application.app_context():
        # Core selects of the columns (the check job's) get plain values too.
        target, options = db.session.execute(
            select(Endpoint.target, Endpoint.options).where(Endpoint.id == made["web"])).one()
        assert (target, options["headers"]["X-Api-Key"]) == (PLAIN["target"], API_KEY)
        # Filters on the target still see the scheme and host.
        assert db.session.execute(select(Endpoint.id).where(Endpoint.target.ilike("https:%"))).scalars().all() == [
            made["web"]]


def test_an_api_answer_still_masks_and_an_update_keeps_the_stored_secrets(database):
    from app.services.endpoints import update_endpoint
    from app.services.notifications import public_view, update_service

    application = database(KEY_OLD)
    made = store_secrets(application)
    with application.app_context():
        endpoint = db.session.get(Endpoint, made["web"])
        shown = endpoint.to_dict()
        assert shown["target"] == "https://shop.example.org/health"
        assert shown["options"]["headers"]["X-Api-Key"] != API_KEY
        # Sent back as shown (read, modify, write): the stored secrets stay.
        update_endpoint(endpoint, {"name": "renamed", "target": shown["target"], "options": shown["options"]},
                        partial=True, from_api=True)
        service = db.session.get(NotificationService, made["service"])
        update_service(service, {"name": "renamed", "config": public_view(service)["config"]})
    assert read_back(application, made) == PLAIN
    assert all(looks_encrypted(token) for token in tokens_of(stored(application, made)))


# --- rotation ----------------------------------------------------------------------


def test_rotation_re_encrypts_everything_under_the_new_key_and_the_old_one_can_go(database):
    old = database(KEY_OLD)
    made = store_secrets(old)
    before = stored(old, made)

    both = database(f"{KEY_NEW},{KEY_OLD}")
    assert read_back(both, made) == PLAIN  # readable under either key before the rotation
    result = both.test_cli_runner().invoke(args=["secrets", "rotate"])
    assert result.exit_code == 0, result.output
    assert "under the first of 2 keys from SECRETS_KEY" in result.output
    assert "notification service settings: 1 rows rewritten, 1 secrets" in result.output
    assert "endpoint URL credentials: 1 rows rewritten, 1 secrets" in result.output
    assert "endpoint secret options and headers: 2 rows rewritten, 2 secrets" in result.output
    assert "sync token (from the join secret): 1 rows rewritten, 1 secrets" in result.output
    assert "done: 5 secrets in 5 rows re-encrypted" in result.output

    after = stored(both, made)
    for token, earlier in zip(tokens_of(after), tokens_of(before)):
        assert token != earlier
        Fernet(KEY_NEW).decrypt(token.encode())
        with pytest.raises(InvalidToken):
            Fernet(KEY_OLD).decrypt(token.encode())
    new_only = database(KEY_NEW)
    assert read_back(new_only, made) == PLAIN
    with new_only.app_context():
        report = secrets_at_rest.check_readable(db.session.connection())
    assert (report.secrets, report.plaintext) == (5, 0)


def test_a_rotation_missing_the_old_key_fails_naming_the_variable_and_changes_nothing(database):
    old = database(KEY_OLD)
    made = store_secrets(old)
    before = stored(old, made)
    new_only = database(KEY_NEW)
    result = new_only.test_cli_runner().invoke(args=["secrets", "rotate"])
    assert result.exit_code == 2
    assert "cannot be decrypted with SECRETS_KEY" in result.output and "nothing was changed" in result.output
    assert stored(new_only, made) == before
    assert read_back(old, made) == PLAIN


# --- a wrong or missing key ---------------------------------------------------------


def test_a_wrong_key_is_a_clear_error_never_garbage(database):
    made = store_secrets(database(KEY_OLD))
    wrong = database(KEY_NEW)
    with wrong.app_context():
        with pytest.raises(SecretUnreadable, match="a notification service's settings stored in the database "
                                                   "cannot be decrypted with SECRETS_KEY"):
            db.session.get(NotificationService, made["service"]).config  # noqa: B018
        db.session.rollback()
        with pytest.raises(SecretUnreadable, match="endpoint's URL credentials .* cannot be decrypted"):
            db.session.execute(select(Endpoint.target).where(Endpoint.id == made["web"])).all()
        db.session.rollback()
        with pytest.raises(SecretUnreadable, match="sync token .* cannot be decrypted"):
            configuration.get_state(configuration.SYNC_TOKEN)
        db.session.rollback()

    # The start stops with the count and the variable named.
    from app.launcher import prepare_database

    with pytest.raises(ConfigError) as caught:
        prepare_database(wrong)
    message = str(caught.value)
    assert message.startswith("5 stored secrets (notification service settings: 1, endpoint URL credentials: 1, "
                              "endpoint secret options and headers: 2, sync token (from the join secret): 1) "
                              "cannot be decrypted with SECRETS_KEY")
    assert not [secret for secret in SECRETS if secret in message]


def test_a_lost_key_file_is_named_when_the_start_stops(database):
    first = database(None, folder="first")  # the key generated into first/secrets_key
    made = store_secrets(first)
    other = database(None, folder="restored")  # the database without its key file: a new key is generated
    from app.launcher import prepare_database

    with pytest.raises(ConfigError, match=r"cannot be decrypted with the key file .*restored/secrets_key "
                                          r"\(SECRETS_KEY is unset\)"):
        prepare_database(other)
    # With the first key file's key given as SECRETS_KEY, it reads them all.
    keys = (first.config["SETTINGS"].data_dir / "secrets_key").read_text()
    assert read_back(database(keys, folder="with-key"), made) == PLAIN


# --- plain text from before encryption ----------------------------------------------


def test_plain_text_stored_before_encryption_is_read_and_then_encrypted(database):
    application = database(KEY_OLD)
    made = store_secrets(application)
    with application.app_context():
        # As a database that was never migrated holds them.
        db.session.execute(text("UPDATE notification_services SET config = :c"),
                           {"c": json.dumps({"url": "http://127.0.0.1:9/hook?token=" + HOOK_TOKEN})})
        db.session.execute(text("UPDATE endpoints SET target = :t WHERE id = :id"),
                           {"t": PLAIN["target"], "id": made["web"]})
        db.session.execute(text("UPDATE instance_config SET value = :v WHERE key = 'sync_token'"), {"v": SYNC_TOKEN})
        db.session.commit()
    back = read_back(application, made)
    assert back["config"] == {"url": "http://127.0.0.1:9/hook?token=" + HOOK_TOKEN}
    assert (back["target"], back["token"]) == (PLAIN["target"], SYNC_TOKEN)

    with application.app_context():
        report = secrets_at_rest.encrypt_plaintext(db.session.connection())
        db.session.commit()
    assert report.plaintext == 3 and report.rewritten == 3
    assert all(looks_encrypted(token) for token in tokens_of(stored(application, made)))
    assert read_back(application, made)["target"] == PLAIN["target"]


def test_the_migration_encrypts_plain_text_rows_and_its_downgrade_decrypts_them(database):
    application = database(KEY_OLD)
    made = store_secrets(application)
    with application.app_context():
        keep_logging(lambda: downgrade(directory=str(ROOT / "migrations"), revision="0008_detail"))
    place = stored(application, made)
    assert place["config"] == PLAIN["config"]
    assert (place["target"], place["header"], place["sasl"], place["token"]) == (
        PLAIN["target"], API_KEY, SASL_PASSWORD, SYNC_TOKEN)

    with application.app_context():
        keep_logging(lambda: upgrade(directory=str(ROOT / "migrations")))
    place = stored(application, made)
    assert all(looks_encrypted(token) for token in tokens_of(place))
    assert not [secret for secret in SECRETS if secret in json.dumps(place)]
    assert read_back(application, made) == PLAIN
    if database.dialect == "postgresql":
        [(length,)] = raw(application, "SELECT character_maximum_length FROM information_schema.columns "
                                       "WHERE table_name = 'endpoints' AND column_name = 'target'")
        assert length == 4096


def test_a_target_as_long_as_allowed_fits_once_its_credentials_are_a_token(database):
    from app.services.endpoints import create_endpoint

    application = database(KEY_OLD)
    target = f"https://{'u' * 900}:{'p' * 1000}@h.example.org/" + "x" * 100
    with application.app_context():
        endpoint_id = create_endpoint({"name": "long", "checkType": "http", "target": target}).id
        db.session.expire_all()
        assert db.session.get(Endpoint, endpoint_id).target == target
    [(stored_target,)] = raw(application, "SELECT target FROM endpoints WHERE id = :id", id=endpoint_id)
    assert len(stored_target) > 2048 and "p" * 20 not in stored_target


# --- secrets used: alerts and checks with the decrypted values -----------------------


def test_an_alert_goes_out_with_the_decrypted_url_token_and_header(database, webhook):
    from app.services.notifications import create_service, send_test

    application = database(KEY_OLD)
    with application.app_context():
        service = create_service({"name": "hook", "kind": "webhook", "config": {
            "url": webhook.url(f"/hook?token={HOOK_TOKEN}"), "headers": {"Authorization": BEARER}}})
        db.session.expire_all()
        delivery = send_test(service.id)
        assert delivery.status == "sent", delivery.last_error
    [request] = webhook.requests
    assert request["path"] == f"/hook?token={HOOK_TOKEN}" and request["headers"]["Authorization"] == BEARER


def test_an_email_goes_out_through_the_encrypted_apprise_url(database, smtp_server):
    from app.services.notifications import create_service, send_test

    application = database(KEY_OLD)
    with application.app_context():
        service = create_service({"name": "mail", "kind": "apprise",
                                  "config": {"url": smtp_server.url(to="oncall@example.org")}})
        service_id = service.id
    [(config,)] = raw(application, "SELECT config FROM notification_services WHERE id = :id", id=service_id)
    assert looks_encrypted(config) and "oncall" not in config
    with application.app_context():
        assert send_test(service_id).status == "sent"
    [message] = smtp_server.wait_for(1)
    assert message["To"] == "oncall@example.org" and "[TEST]" in message["Subject"]


class GuardedTarget:
    """A loopback HTTP server that answers 200 only with the right credentials."""

    def __init__(self):
        self.seen: list[tuple] = []
        self.server = make_server("127.0.0.1", 0, self.answer, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, environ, start_response):
        request = Request(environ)
        self.seen.append((request.headers.get("Authorization"), request.headers.get("X-Api-Key")))
        expected = "Basic " + base64.b64encode(f"ops:{URL_PASSWORD}".encode()).decode()
        ok = request.headers.get("Authorization") == expected and request.headers.get("X-Api-Key") == API_KEY
        return Response("ok" if ok else "no", status=200 if ok else 401)(environ, start_response)


@pytest.fixture
def guarded():
    target = GuardedTarget()
    target.thread.start()
    yield target
    target.server.shutdown()


def test_a_check_runs_with_the_decrypted_credentials_and_headers(database, guarded):
    from app.services.endpoints import create_endpoint

    application = database(KEY_OLD)
    port = guarded.server.server_port
    with application.app_context():
        endpoint_id = create_endpoint({"name": "guarded", "checkType": "http",
                                       "target": f"http://ops:{URL_PASSWORD}@127.0.0.1:{port}/",
                                       "options": {"headers": {"X-Api-Key": API_KEY}}}).id
        # As the check job reads them: one Core select of the columns.
        row = db.session.execute(select(Endpoint.check_type, Endpoint.target, Endpoint.port, Endpoint.options)
                                 .where(Endpoint.id == endpoint_id)).one()
    result = run_check(row.check_type, row.target, row.port, 5.0, row.options)
    assert result.is_ok, result.failure_reason
    assert guarded.seen[-1][1] == API_KEY


# --- never logged -------------------------------------------------------------------


def test_no_secret_reaches_the_log(database, webhook, smtp_server, caplog):
    from app.services.endpoints import update_endpoint
    from app.services.notifications import create_service, send_test

    application = database(KEY_OLD, LOG_LEVEL="DEBUG")
    caplog.set_level(logging.DEBUG)
    made = store_secrets(application)
    with application.app_context():
        service = create_service({"name": "hook", "kind": "webhook", "config": {
            "url": webhook.url(f"/hook?token={HOOK_TOKEN}"), "headers": {"Authorization": BEARER}}})
        send_test(service.id)
        # An SMTP login the peer does not offer: apprise fails and says why.
        mail = create_service({"name": "mail", "kind": "apprise", "config": {
            "url": f"mailto://ops:{URL_PASSWORD}@127.0.0.1:{smtp_server.port}?from=monitor@example.org&to=ops@example.org"}})
        send_test(mail.id)
        update_endpoint(db.session.get(Endpoint, made["web"]), {"name": "renamed"}, partial=True)
    database(f"{KEY_NEW},{KEY_OLD}", LOG_LEVEL="DEBUG").test_cli_runner().invoke(args=["secrets", "rotate"])
    wrong = database(Fernet.generate_key().decode(), LOG_LEVEL="DEBUG")
    with wrong.app_context(), pytest.raises(SecretUnreadable):
        secrets_at_rest.check_readable(db.session.connection())
    assert caplog.records, "nothing was logged: the test would prove nothing"
    # Everything but the loopback peers' own request logs (werkzeug serves them).
    logged = "\n".join(f"{record.name}: {record.getMessage()}" for record in caplog.records
                       if record.name != "werkzeug")
    assert not [secret for secret in SECRETS if secret in logged]
    assert KEY_OLD not in logged and KEY_NEW not in logged
