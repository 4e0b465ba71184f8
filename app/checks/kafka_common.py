"""What the Kafka producer and consumer checks share: security options,
kafka-python client settings derived from a check's timeout, and failure
reasons a person can act on.

kafka-python is imported where a Kafka check runs, never with the app: an
instance without Kafka checks does not load it (about 7 MB per process)."""
from __future__ import annotations

import re
import ssl
import threading
import time
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from app.checks import resolve
from app.checks.base import CheckFailed, CheckOptions

if TYPE_CHECKING:
    from kafka.net import KafkaNetClient

# Brokers log the client id of every connection: naming the monitor there
# lets a Kafka operator tell these checks apart from real applications.
CLIENT_ID = "endpoint-monitor"

# Kafka's own rule for topic names, so a typo is caught when the endpoint is
# saved rather than reported as a missing topic at every check.
TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"


def _topic_name(value: str) -> str:
    if not re.fullmatch(TOPIC_PATTERN, value):
        raise ValueError("must be 1 to 249 letters, digits, dots, underscores or dashes (Kafka's rule for "
                         "topic names)")
    return value


# A topic name: required, with no default a form could show as its value.
Topic = Annotated[str, AfterValidator(_topic_name)]

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
SSL_PROTOCOLS = ("SSL", "SASL_SSL")


class KafkaSecurityOptions(CheckOptions):
    """How to reach the brokers: TLS and SASL settings of both Kafka checks."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    # Kept out of repr so a logged options object does not leak the password.
    sasl_password: str | None = Field(default=None, repr=False)
    # A CA bundle path on the machine running the check; None uses the
    # system's trusted CAs.
    ssl_cafile: str | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _consistent_security(self):
        # Each error names the field to fix: a half-configured SASL setup
        # would otherwise surface only as a bootstrap timeout at check time.
        sasl = self.security_protocol in SASL_PROTOCOLS
        if sasl:
            if self.sasl_mechanism is None:
                raise ValueError(f"sasl_mechanism is required with security_protocol {self.security_protocol}")
            if not self.sasl_username or not self.sasl_password:
                raise ValueError("sasl_username and sasl_password are required with "
                                 f"security_protocol {self.security_protocol}")
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            raise ValueError("sasl_mechanism, sasl_username and sasl_password need security_protocol "
                             "SASL_PLAINTEXT or SASL_SSL")
        if self.ssl_cafile and self.security_protocol not in SSL_PROTOCOLS:
            raise ValueError("ssl_cafile needs security_protocol SSL or SASL_SSL")
        return self

    def connection_key(self) -> tuple:
        """The settings that decide which connection a client makes."""
        return (self.security_protocol, self.sasl_mechanism, self.sasl_username, self.sasl_password,
                self.ssl_cafile, self.ssl_check_hostname)


def bootstrap_servers(target: str) -> str:
    """``host:port[,host:port]`` from an endpoint target, spaces removed."""
    servers = [s.strip() for s in (target or "").split(",") if s.strip()]
    if not servers:
        raise CheckFailed("no bootstrap servers given")
    return ",".join(servers)


def look_up_bootstrap(bootstrap: str, deadline: float, timeout: float) -> None:
    """Look the bootstrap servers' names up within the check's ``deadline``
    (a ``time.monotonic()`` value) before kafka-python does.

    kafka-python resolves names on its IO thread with no timeout, where
    nothing can cut a hung lookup short. A name whose DNS does not answer
    in time fails the check here instead; one that answered has just been
    looked up, so kafka-python's own lookup follows quickly. The names are
    looked up at once and one that resolves is enough, as it is for
    kafka-python (which may still try a hung one first: it shuffles them).
    """
    hosts = [_host_of(server) for server in bootstrap.split(",")]
    resolve.resolve_any(hosts, None, deadline=time.perf_counter() + (deadline - time.monotonic()),
                        timeout=timeout)


def _host_of(server: str) -> str:
    """The host of ``host:port``, ``[v6]:port`` or a bare host."""
    if server.startswith("["):
        return server[1:].split("]", 1)[0]
    if server.count(":") == 1:
        return server.split(":", 1)[0]
    return server  # a bare host name or IPv6 address


def client_settings(bootstrap: str, options: KafkaSecurityOptions, timeout: float, deadline: float) -> dict:
    """kafka-python settings every client type accepts: producer, consumer and admin.

    Every wait is derived from the check's timeout so that an unreachable or
    silent broker fails the check in time instead of after kafka-python's
    defaults (30 s bootstrap, 30 s requests, 60 s metadata blocking).
    """
    settings = {
        "bootstrap_servers": bootstrap,
        "client_id": CLIENT_ID,
        "request_timeout_ms": timeout_ms(timeout),
        # Only used while the client is constructed, so it gets what is left
        # of this check's budget rather than the whole timeout.
        "bootstrap_timeout_ms": remaining_ms(deadline),
        "security_protocol": options.security_protocol,
    }
    if options.security_protocol in SSL_PROTOCOLS:
        settings["ssl_context"] = _ssl_context(options)
    if options.security_protocol in SASL_PROTOCOLS:
        settings.update(sasl_mechanism=options.sasl_mechanism,
                        sasl_plain_username=options.sasl_username,
                        sasl_plain_password=options.sasl_password)
    return settings


def _ssl_context(options: KafkaSecurityOptions) -> ssl.SSLContext:
    # Built here rather than by kafka-python so that an unreadable CA file is
    # reported as such: kafka-python would fail every connection attempt in
    # the background and report only a bootstrap timeout.
    try:
        context = ssl.create_default_context(cafile=options.ssl_cafile)
    except (OSError, ssl.SSLError) as exc:
        raise CheckFailed(f"cannot load ssl_cafile {options.ssl_cafile}: {exc}") from None
    # What kafka-python would have set up itself.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = options.ssl_check_hostname
    return context


def timeout_ms(seconds: float) -> int:
    """Seconds as the whole, positive milliseconds kafka-python expects."""
    return max(1, int(seconds * 1000))


def remaining_ms(deadline: float) -> int:
    """Milliseconds left until ``deadline`` (a ``time.monotonic()`` value), at least 1."""
    return timeout_ms(deadline - time.monotonic())


def remaining_s(deadline: float) -> float:
    """Seconds left until ``deadline``, never negative."""
    return max(0.0, deadline - time.monotonic())


class Watchdog:
    """Aborts a check's Kafka connections if the check outlives its deadline.

    The timeouts set by ``client_settings`` bound most of kafka-python's
    waits, but not all: in 3.0.12 a TLS handshake with a broker that accepts
    the connection and then says nothing blocks bootstrap, and every call
    that needs that connection, forever. Past the deadline the watchdog
    closes the connection managers of the clients it watches, which fails
    those waits at once; a client aborted this way is unusable afterwards.
    """

    # Lets kafka-python's own timeouts, which give more specific reasons,
    # fire first.
    GRACE = 0.25

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.fired = False
        self._net_clients: list[KafkaNetClient] = []
        self._lock = threading.Lock()
        self._finished = False
        self._timer: threading.Timer | None = None

    def watch(self, *net_clients: KafkaNetClient) -> None:
        """Abort these network clients too if the check overruns."""
        with self._lock:
            self._net_clients.extend(net_clients)

    def __enter__(self) -> Watchdog:
        self._timer = threading.Timer(remaining_s(self.deadline) + self.GRACE, self._fire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self._finished = True
        self._timer.cancel()
        # Its thread ends at once when cancelled; waiting for that keeps
        # checks from leaving threads behind, even briefly.
        self._timer.join()

    def _fire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.fired = True
            net_clients = list(self._net_clients)
        for net_client in net_clients:
            # Run on the client's own IO loop: its connection state is not
            # thread-safe. Private attributes of the pinned kafka-python.
            try:
                net_client._net.call_soon_threadsafe(net_client._manager.close)
            except RuntimeError:  # its loop is already closed: nothing waits on it
                pass


def open_client(client_class, settings: dict, timeout: float, watchdog: Watchdog):
    """Construct a kafka-python client, watched by ``watchdog``.

    Returns the client and its network client (for a later check's
    watchdog). A failed bootstrap becomes CheckFailed with a DOWN reason.
    """
    from kafka import errors as kafka_errors
    from kafka.net import KafkaNetClient

    created: list[KafkaNetClient] = []

    def net_client(**configs) -> KafkaNetClient:
        client = KafkaNetClient(**configs)
        created.append(client)
        watchdog.watch(client)
        return client

    try:
        client = client_class(**settings, kafka_client=net_client)
    except Exception as exc:
        # A consumer or admin client that fails to bootstrap leaves its IO
        # thread running (kafka-python 3.0.12): one leaked thread per check
        # of an unreachable cluster, unless closed here.
        for net in created:
            net.close()
        if watchdog.fired or isinstance(exc, kafka_errors.KafkaTimeoutError):
            # kafka-python retries refused, reset and silent connections
            # alike until its deadline, so a timeout is all it reports.
            raise CheckFailed(f"no Kafka broker at {settings['bootstrap_servers']} answered "
                              f"within {timeout:g} s") from None
        if isinstance(exc, kafka_errors.KafkaError):
            raise CheckFailed(failure_reason(exc, settings["bootstrap_servers"], timeout)) from None
        raise
    return client, created[0]


def failure_reason(exc: Exception, bootstrap: str, timeout: float, timed_out: bool = False) -> str:
    """A DOWN reason for a kafka-python error raised while talking to ``bootstrap``.

    ``timed_out`` says the check's watchdog aborted the connection, whatever
    error that surfaced as.
    """
    from kafka import errors as kafka_errors

    if timed_out or isinstance(exc, (kafka_errors.KafkaTimeoutError, kafka_errors.RequestTimedOutError)):
        return f"Kafka at {bootstrap} did not answer within {timeout:g} s"
    if isinstance(exc, kafka_errors.SaslAuthenticationFailedError):
        return f"Kafka authentication failed: {exc.args[0] if exc.args else exc.description}"
    if isinstance(exc, kafka_errors.AuthorizationError):
        return f"not authorized by Kafka: {exc.description or exc}"
    if isinstance(exc, kafka_errors.KafkaConnectionError):
        return f"connection to Kafka at {bootstrap} failed: {exc.args[0] if exc.args else exc}"
    return f"Kafka error: {exc}"


def topic_error(topic: str, error_code: int) -> str | None:
    """The DOWN reason for a topic-level metadata error code, or None if there is none."""
    from kafka import errors as kafka_errors

    if error_code == 0:
        return None
    error = kafka_errors.for_code(error_code)
    if error is kafka_errors.UnknownTopicOrPartitionError:
        return f"topic {topic!r} does not exist"
    if issubclass(error, kafka_errors.AuthorizationError):
        return f"not authorized to describe topic {topic!r}"
    return f"metadata for topic {topic!r} failed: {error.message or error.__name__}"
