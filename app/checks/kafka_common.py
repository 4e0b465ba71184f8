"""What the Kafka producer and consumer checks share: security options,
kafka-python client settings derived from a check's timeout, and failure
reasons a person can act on."""
from __future__ import annotations

import time
from typing import Literal

from kafka import KafkaAdminClient, KafkaConsumer
from kafka import errors as kafka_errors
from pydantic import Field, model_validator

from app.checks.base import CheckFailed, CheckOptions

# Brokers log the client id of every connection: naming the monitor there
# lets a Kafka operator tell these checks apart from real applications.
CLIENT_ID = "endpoint-monitor"

# Kafka's own rule for topic names, so a typo is caught when the endpoint is
# saved rather than reported as a missing topic at every check.
TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"

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
            if not self.sasl_username or self.sasl_password is None:
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


class _StopsIOWhenStartFails:
    """Closes a kafka-python client whose constructor fails.

    KafkaConsumer and KafkaAdminClient (3.0.12) start their IO thread before
    bootstrapping and leave it running when bootstrap fails: one leaked
    thread at every check of an unreachable cluster.
    """

    def __init__(self, **configs):
        try:
            super().__init__(**configs)
        except Exception:
            # Not set when the failure came before the IO thread started.
            if getattr(self, "_client", None) is not None:
                self._client.close()
            raise


class AdminClient(_StopsIOWhenStartFails, KafkaAdminClient):
    """KafkaAdminClient that does not leak its IO thread when it cannot connect."""


class Consumer(_StopsIOWhenStartFails, KafkaConsumer):
    """KafkaConsumer that does not leak its IO thread when it cannot connect."""


def bootstrap_servers(target: str) -> str:
    """``host:port[,host:port]`` from an endpoint target, spaces removed."""
    servers = [s.strip() for s in (target or "").split(",") if s.strip()]
    if not servers:
        raise CheckFailed("no bootstrap servers given")
    return ",".join(servers)


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
        "ssl_check_hostname": options.ssl_check_hostname,
    }
    if options.ssl_cafile:
        settings["ssl_cafile"] = options.ssl_cafile
    if options.security_protocol in SASL_PROTOCOLS:
        settings.update(sasl_mechanism=options.sasl_mechanism,
                        sasl_plain_username=options.sasl_username,
                        sasl_plain_password=options.sasl_password)
    return settings


def timeout_ms(seconds: float) -> int:
    """Seconds as the whole, positive milliseconds kafka-python expects."""
    return max(1, int(seconds * 1000))


def remaining_ms(deadline: float) -> int:
    """Milliseconds left until ``deadline`` (a ``time.monotonic()`` value), at least 1."""
    return timeout_ms(deadline - time.monotonic())


def remaining_s(deadline: float) -> float:
    """Seconds left until ``deadline``, never negative."""
    return max(0.0, deadline - time.monotonic())


def open_client(client_class, settings: dict, timeout: float):
    """Construct a kafka-python client; a failed bootstrap becomes a DOWN reason."""
    try:
        return client_class(**settings)
    except kafka_errors.KafkaTimeoutError:
        # kafka-python retries refused, reset and silent connections alike
        # until bootstrap_timeout_ms, so a timeout is all it reports.
        raise CheckFailed(f"no Kafka broker at {settings['bootstrap_servers']} answered "
                          f"within {timeout:g} s") from None
    except kafka_errors.KafkaError as exc:
        raise CheckFailed(failure_reason(exc, settings["bootstrap_servers"], timeout)) from None


def failure_reason(exc: Exception, bootstrap: str, timeout: float) -> str:
    """A DOWN reason for a kafka-python error raised while talking to ``bootstrap``."""
    if isinstance(exc, kafka_errors.KafkaTimeoutError):
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
    if error_code == 0:
        return None
    error = kafka_errors.for_code(error_code)
    if error is kafka_errors.UnknownTopicOrPartitionError:
        return f"topic {topic!r} does not exist"
    if issubclass(error, kafka_errors.AuthorizationError):
        return f"not authorized to describe topic {topic!r}"
    return f"metadata for topic {topic!r} failed: {error.message or error.__name__}"
