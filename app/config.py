"""Settings read from the environment, validated once at start-up.

Every value comes from one environment variable; a bad value raises
``ConfigError`` whose message names the variable, so the process refuses to
start instead of running half-configured.
"""
from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from app.data_directory import problem as data_directory_problem
from app.secret_box import generate_key as generate_secrets_key
from app.secret_box import is_key as is_secrets_key

ROLE_STANDALONE = "standalone"
ROLE_PRIMARY = "primary"
ROLE_DEPENDENT = "dependent"
# A primary that lost touch with a majority of the membership: it keeps
# checking but accepts no results, no configuration and sends no alert.
ROLE_FENCED = "fenced"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names it."""


def _bool(env, name, default=False):
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _number(env, name, default, *, minimum=None, maximum=None, kind=int):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name} must be {noun}, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {raw!r}")
    return value


def _url(env, name, schemes):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    parsed = urlparse(raw)
    if parsed.scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in sorted(schemes))
        raise ConfigError(f"{name} must start with {allowed}, got {raw!r}")
    if not parsed.netloc and not parsed.path.strip("/"):
        raise ConfigError(f"{name} has no host, got {raw!r}")
    return raw.rstrip("/") if parsed.scheme in {"http", "https"} else raw


def _host(env) -> str:
    raw = (env.get("HOST") or "127.0.0.1").strip()
    bare = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    try:
        ipaddress.ip_address(bare)
        return raw
    except ValueError:
        pass
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}", bare):
        return raw
    raise ConfigError(f"HOST must be an address or host name to listen on, like 127.0.0.1 or 0.0.0.0, got {raw!r}")


def _host_port(env, name) -> tuple[str, int] | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    host, sep, port = raw.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in host):
        raise ConfigError(f"{name} must be host:port (like 1.1.1.1:53 or [::1]:443), got {raw!r}")
    return host, int(port)


_DEGREES = re.compile(r"[+-]?\d{1,3}(\.\d{1,10})?")


def _coordinates(env) -> tuple[float, float] | None:
    """INSTANCE_LATITUDE and INSTANCE_LONGITUDE in decimal degrees: both or neither."""
    values = {}
    for name, limit in (("INSTANCE_LATITUDE", 90), ("INSTANCE_LONGITUDE", 180)):
        raw = (env.get(name) or "").strip()
        if not raw:
            continue
        # A plain decimal: float() would also take "nan", "inf" and "1_0".
        if not _DEGREES.fullmatch(raw) or not -limit <= float(raw) <= limit:
            raise ConfigError(f"{name} must be decimal degrees from {-limit} to {limit} "
                              f"(like 50.11 or -33.87), got {raw!r}")
        values[name] = float(raw)
    if len(values) == 1:
        (given,) = values
        missing = "INSTANCE_LONGITUDE" if given == "INSTANCE_LATITUDE" else "INSTANCE_LATITUDE"
        raise ConfigError(f"{given} is set but {missing} is not: set both (where this instance "
                          "stands on the map) or neither")
    return (values["INSTANCE_LATITUDE"], values["INSTANCE_LONGITUDE"]) if values else None


def _readable_file(env, name) -> Path | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser().resolve()
    try:
        with open(path, "rb"):
            pass
    except IsADirectoryError:
        raise ConfigError(f"{name} must be a file, got the directory {raw!r}") from None
    except OSError as exc:
        raise ConfigError(f"{name} cannot be read: {raw!r}: {exc.strerror or exc}") from None
    return path


def _no_passphrase():
    # Called by OpenSSL for an encrypted key: no process here could type it.
    raise ConfigError("SYNC_CLIENT_KEY is encrypted: give the key without a passphrase "
                      "(and keep the file readable by the monitor's user alone)")


def _sync_tls(env) -> tuple[Path | None, Path | None, Path | None]:
    """SYNC_CLIENT_CERT, SYNC_CLIENT_KEY and SYNC_CA_BUNDLE, each a readable
    PEM file, checked as TLS will use them: a certificate that does not
    match its key fails here, at start, not at every sync round."""
    cert, key = _readable_file(env, "SYNC_CLIENT_CERT"), _readable_file(env, "SYNC_CLIENT_KEY")
    bundle = _readable_file(env, "SYNC_CA_BUNDLE")
    if key and not cert:
        raise ConfigError("SYNC_CLIENT_KEY is set but SYNC_CLIENT_CERT is not: set the client "
                          "certificate too (or only SYNC_CLIENT_CERT, to a file holding both)")
    if cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_cert_chain(cert, key, password=_no_passphrase)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise ConfigError(f"SYNC_CLIENT_KEY {str(key)!r} is not the private key of the certificate "
                                  f"in SYNC_CLIENT_CERT {str(cert)!r}") from None
            where = (f"SYNC_CLIENT_CERT {str(cert)!r} and SYNC_CLIENT_KEY {str(key)!r} must be a PEM "
                     "certificate and its PEM private key" if key else
                     f"SYNC_CLIENT_CERT {str(cert)!r} must hold a PEM certificate and its private key "
                     "(or set SYNC_CLIENT_KEY to the key's file)")
            raise ConfigError(f"{where}: OpenSSL could not read them ({exc.reason or exc})") from None
    if bundle:
        try:
            ssl.create_default_context(cafile=str(bundle))
        except ssl.SSLError as exc:
            raise ConfigError(f"SYNC_CA_BUNDLE must hold PEM CA certificates: {exc.reason or exc}") from None
    return cert, key, bundle


@dataclass(frozen=True)
class Settings:
    """Validated process settings; see README.md for what each one does."""

    role: str = ROLE_STANDALONE
    enable_sync_api: bool = False
    primary_sync_url: str | None = None
    public_sync_url: str | None = None
    sync_shared_secret: str | None = None
    instance_name: str = field(default_factory=socket.gethostname)
    instance_location: str = "default"
    # (latitude, longitude) on the location map; None: looked up from
    # instance_location (app.services.regions), if it names a known place.
    instance_coordinates: tuple[float, float] | None = None
    failover_order: int = 0
    # Dependents probe the primary this often and suspect it after this many
    # failures in a row; a primary fences itself after as long without a
    # majority.
    failover_check_interval: int = 3
    failover_max_failures: int = 3
    sync_interval: int = 30
    heartbeat_interval: int = 10
    connection_timeout: int = 10
    host: str = "127.0.0.1"
    port: int = 3001
    sync_api_port: int = 3002
    data_dir: Path = Path("data")
    database_url: str = ""
    redis_url: str | None = None
    secret_key: str = ""
    # SECRETS_KEY: Fernet keys for secrets at rest, the first encrypting;
    # empty: one generated into the data directory.
    secrets_keys: tuple[str, ...] = ()
    check_batch_size: int = 200
    check_concurrency: int = 64
    # How long raw results, hourly counts and daily counts are kept.
    result_retention_days: int = 7
    hourly_retention_days: int = 90
    daily_retention_days: int = 730
    # How long finished notification deliveries (the alert history) are kept.
    delivery_retention_days: int = 30
    sync_token_ttl: int = 86400
    trusted_proxies: int = 0
    log_level: str = "INFO"
    # host, port this instance connects to every 10 s; while it fails, its
    # location is probe-offline and does not vote.
    connectivity_check_target: tuple[str, int] | None = None
    # /metrics: open to anyone (firewall it), or else for API keys, signed-in
    # users and, when set, this bearer token.
    metrics_public: bool = False
    metrics_token: str | None = None
    # TLS towards the primary and the other members' sync APIs: a client
    # certificate (and its key) for a proxy that verifies them, and the CAs
    # to trust instead of the system's.
    sync_client_cert: Path | None = None
    sync_client_key: Path | None = None
    sync_ca_bundle: Path | None = None

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def failover_delay(self) -> int:
        """Seconds from a primary's last answer to its being suspected."""
        return self.failover_check_interval * self.failover_max_failures


def load_settings(env=None) -> Settings:
    """Read and validate settings from ``env`` (default ``os.environ``)."""
    env = os.environ if env is None else env

    enable_sync_api = _bool(env, "ENABLE_SYNC_API")
    primary_sync_url = _url(env, "PRIMARY_SYNC_URL", {"http", "https"})
    if enable_sync_api and primary_sync_url:
        raise ConfigError(
            "ENABLE_SYNC_API and PRIMARY_SYNC_URL are both set: an instance is "
            "either the primary (ENABLE_SYNC_API=true) or a dependent of the "
            "primary at PRIMARY_SYNC_URL, not both"
        )
    if enable_sync_api:
        role = ROLE_PRIMARY
    elif primary_sync_url:
        role = ROLE_DEPENDENT
    else:
        role = ROLE_STANDALONE

    secret = env.get("SYNC_SHARED_SECRET") or None
    if role != ROLE_STANDALONE:
        if not secret:
            raise ConfigError(
                f"SYNC_SHARED_SECRET must be set on a {role}: it is the cluster's join secret, "
                "the same on the primary and every dependent"
            )
        if len(secret) < 16:
            raise ConfigError("SYNC_SHARED_SECRET must be at least 16 characters")

    database_url = (env.get("DATABASE_URL") or "").strip()
    database_path = (env.get("DATABASE_PATH") or "").strip()
    if env.get("DATA_DIR"):
        data_dir = Path(env["DATA_DIR"]).expanduser().resolve()
    elif database_path and not database_url:
        # Instances told apart only by DATABASE_PATH (as compose files set
        # it) must not share ./data, and with it one embedded Redis.
        data_dir = Path(database_path).expanduser().resolve().parent
    else:
        data_dir = Path("data").resolve()
    if database_url:
        if urlparse(database_url).scheme.split("+")[0] not in {"sqlite", "postgresql", "postgres"}:
            raise ConfigError(
                f"DATABASE_URL must be a sqlite:// or postgresql:// URL, got {database_url!r}"
            )
        if database_url.startswith("postgres://"):
            # PaaS providers hand out postgres://; SQLAlchemy wants postgresql://.
            database_url = "postgresql://" + database_url[len("postgres://"):]
    else:
        path = Path(database_path).expanduser() if database_path else data_dir / "monitor.db"
        database_url = f"sqlite:///{path.resolve()}"

    secret_key = env.get("SECRET_KEY") or ""
    if secret_key and len(secret_key) < 16:
        raise ConfigError("SECRET_KEY must be at least 16 characters (or unset, to have one generated)")
    secrets_keys = _secrets_keys(env)
    host = _host(env)
    log_level = (env.get("LOG_LEVEL") or "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

    instance_location = (env.get("INSTANCE_LOCATION") or "default").strip()
    if len(instance_location) > 100:
        raise ConfigError("INSTANCE_LOCATION must be at most 100 characters")
    instance_name = (env.get("INSTANCE_NAME") or socket.gethostname()).strip()
    if len(instance_name) > 100:
        raise ConfigError("INSTANCE_NAME must be at most 100 characters")

    metrics_public = _bool(env, "METRICS_PUBLIC")
    metrics_token = (env.get("METRICS_TOKEN") or "").strip() or None
    if metrics_token and len(metrics_token) < 16:
        raise ConfigError("METRICS_TOKEN must be at least 16 characters")
    if metrics_token and metrics_public:
        raise ConfigError(
            "METRICS_PUBLIC=true and METRICS_TOKEN are both set: /metrics is either open to anyone "
            "(METRICS_PUBLIC) or needs a token, not both"
        )

    sync_client_cert, sync_client_key, sync_ca_bundle = _sync_tls(env)
    port = _number(env, "PORT", 3001, minimum=1, maximum=65535)
    sync_api_port = _number(env, "SYNC_API_PORT", 3002, minimum=1, maximum=65535)
    if port == sync_api_port:
        # Each request is served by the app of the port it arrives on.
        raise ConfigError(f"SYNC_API_PORT must differ from PORT (both are {port})")

    return Settings(
        role=role,
        enable_sync_api=enable_sync_api,
        primary_sync_url=primary_sync_url,
        public_sync_url=_url(env, "PUBLIC_SYNC_URL", {"http", "https"}),
        sync_shared_secret=secret,
        instance_name=instance_name,
        instance_location=instance_location,
        instance_coordinates=_coordinates(env),
        failover_order=_number(env, "FAILOVER_ORDER", 0, minimum=0, maximum=10_000),
        failover_check_interval=_number(env, "FAILOVER_CHECK_INTERVAL", 3, minimum=1, maximum=600),
        failover_max_failures=_number(env, "FAILOVER_MAX_FAILURES", 3, minimum=1, maximum=100),
        sync_interval=_number(env, "SYNC_INTERVAL", 30, minimum=1, maximum=86400),
        heartbeat_interval=_number(env, "HEARTBEAT_INTERVAL", 10, minimum=1, maximum=3600),
        connection_timeout=_number(env, "CONNECTION_TIMEOUT", 10, minimum=1, maximum=300),
        host=host,
        port=port,
        sync_api_port=sync_api_port,
        data_dir=data_dir,
        database_url=database_url,
        redis_url=_url(env, "REDIS_URL", {"redis", "rediss", "unix"}),
        secret_key=secret_key,
        secrets_keys=secrets_keys,
        check_batch_size=_number(env, "CHECK_BATCH_SIZE", 200, minimum=1, maximum=5000),
        check_concurrency=_number(env, "CHECK_CONCURRENCY", 64, minimum=1, maximum=1024),
        result_retention_days=_number(env, "RESULT_RETENTION_DAYS", 7, minimum=1, maximum=3650),
        # The endpoint page charts 30 days of hours, a status page 90 days.
        hourly_retention_days=_number(env, "HOURLY_RETENTION_DAYS", 90, minimum=31, maximum=3650),
        daily_retention_days=_number(env, "DAILY_RETENTION_DAYS", 730, minimum=91, maximum=36500),
        delivery_retention_days=_number(env, "DELIVERY_RETENTION_DAYS", 30, minimum=1, maximum=3650),
        sync_token_ttl=_number(env, "SYNC_TOKEN_TTL", 86400, minimum=60, maximum=30 * 86400),
        trusted_proxies=_number(env, "TRUSTED_PROXIES", 0, minimum=0, maximum=5),
        log_level=log_level,
        connectivity_check_target=_host_port(env, "CONNECTIVITY_CHECK_TARGET"),
        metrics_public=metrics_public,
        metrics_token=metrics_token,
        sync_client_cert=sync_client_cert,
        sync_client_key=sync_client_key,
        sync_ca_bundle=sync_ca_bundle,
    )


SECRETS_KEY_FILE = "secrets_key"
_SECRETS_KEY_FORMAT = ("one or more Fernet keys separated by commas, each 44 characters of url-safe base64 "
                       "(`./monitor secrets generate-key` prints one)")


def _secrets_keys(env) -> tuple[str, ...]:
    # The message never repeats the value: it is a secret.
    raw = env.get("SECRETS_KEY")
    if raw is None or raw.strip() == "":
        return ()
    keys = tuple(key.strip() for key in raw.split(","))
    for number, key in enumerate(keys, 1):
        if not is_secrets_key(key):
            which = f"key {number} of {len(keys)}" if len(keys) > 1 else "the value given"
            raise ConfigError(f"SECRETS_KEY must be {_SECRETS_KEY_FORMAT}; {which} is "
                              + ("empty" if not key else "not a Fernet key"))
    return keys


def secret_key_for(settings: Settings) -> str:
    """SECRET_KEY, or a random key generated once and kept in the data dir.

    Every process of one instance must sign with the same key, so a generated
    key is written to ``<data_dir>/secret_key`` (mode 0600) and reused. The
    file appears whole or not at all (written aside, then linked into
    place), so a full disk or a racing process never leaves an empty key
    behind; a data directory that cannot take it is a ``ConfigError``
    naming the directory.
    """
    if settings.secret_key:
        return settings.secret_key
    return _key_file(settings, "secret_key", lambda: secrets.token_urlsafe(48))


def secrets_keys_for(settings: Settings) -> tuple[tuple[str, ...], str]:
    """The keys secrets are encrypted under, and where they came from.

    ``SECRETS_KEY`` when set; otherwise one Fernet key generated at first
    start into ``<data_dir>/secrets_key`` (mode 0600), as the secret key
    is, so a fresh machine needs no set-up. A key file that holds no valid
    key is a ``ConfigError`` naming the file.
    """
    if settings.secrets_keys:
        return settings.secrets_keys, "SECRETS_KEY"
    path = settings.data_dir / SECRETS_KEY_FILE
    raw = _key_file(settings, SECRETS_KEY_FILE, generate_secrets_key)
    keys = tuple(key.strip() for key in raw.split(","))
    if not all(is_secrets_key(key) for key in keys):
        raise ConfigError(f"the key file {path} must hold {_SECRETS_KEY_FORMAT}; restore it from the "
                          "backup it was saved with, or set SECRETS_KEY")
    return keys, f"the key file {path} (SECRETS_KEY is unset)"


def _key_file(settings: Settings, name: str, generate) -> str:
    """The key kept in ``<data_dir>/<name>``, generated (mode 0600) if missing."""
    path = settings.data_dir / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(data_directory_problem(settings.data_dir, exc)) from None
    key = generate()
    aside = settings.data_dir / f".{name}.{os.getpid()}"
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(key)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(aside, path)
        except FileExistsError:
            return path.read_text().strip()  # another process won the race
        finally:
            aside.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(data_directory_problem(settings.data_dir, exc)) from None
    return key
