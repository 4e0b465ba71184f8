"""Kafka producer check: can one message be written to a topic, and how fast
is it acknowledged.

``spec.target`` is the bootstrap servers, ``host:port[,host:port]``. The
response time runs from handing the message to the producer until the
broker's acknowledgement (with ``acks=0`` there is none: it ends once the
message is sent).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

from pydantic import field_validator

from app.checks.base import CheckFailed, CheckResult, CheckSpec, elapsed_ms
from app.checks.kafka_common import (
    CLIENT_ID, KafkaSecurityOptions, Topic, Watchdog, bootstrap_servers, client_settings,
    failure_reason, look_up_bootstrap, open_client, remaining_s, timeout_ms, topic_error,
)

if TYPE_CHECKING:
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.net import KafkaNetClient

logger = logging.getLogger(__name__)

# Clients kept for reuse; beyond this many connection settings the least
# recently used are closed, so a monitor of many clusters stays bounded.
MAX_CACHED_CLIENTS = 16


class Options(KafkaSecurityOptions):
    topic: Topic
    # None sends a small JSON heartbeat stamped when it is sent; a fixed
    # default would carry the time the endpoint was saved.
    message: str | None = None
    key: str | None = None
    acks: Literal["all", 1, 0] = "all"

    @field_validator("acks", mode="before")
    @classmethod
    def _acks_from_text(cls, value):
        # Forms and JSON clients send "1" as often as 1, and -1 is Kafka's
        # own spelling of "all".
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        return "all" if value == -1 else value


@dataclass
class _Clients:
    """A producer and the admin client that checks topics before producing.

    The admin client is needed because kafka-python 3.0.12 does not pass the
    producer's ``allow_auto_create_topics=False`` on to its metadata
    requests: asking the producer about a missing topic creates it on
    brokers that auto-create topics (Kafka's default).
    """

    producer: KafkaProducer
    admin: KafkaAdminClient
    # Their network clients, for the watchdog of each check that uses them.
    net_clients: tuple[KafkaNetClient, ...]

    def close(self) -> None:
        """Close both clients without waiting on a broker that may be gone."""
        _close_quietly(lambda: self.producer.close(timeout=0), "producer")
        _close_quietly(self.admin.close, "admin client")


def _close_quietly(close, what: str) -> None:
    try:
        close()
    except Exception:  # best effort: the client is being thrown away anyway
        logger.debug("closing Kafka %s raised", what, exc_info=True)


_clients: OrderedDict[tuple, _Clients] = OrderedDict()
_clients_lock = threading.Lock()


def check(spec: CheckSpec) -> CheckResult:
    """Produce one message to ``options.topic`` and wait for its acknowledgement."""
    from kafka import errors as kafka_errors

    options: Options = spec.options
    bootstrap = bootstrap_servers(spec.target)
    deadline = time.monotonic() + spec.timeout
    key = (bootstrap, options.acks, timeout_ms(spec.timeout)) + options.connection_key()
    with Watchdog(deadline) as watchdog:
        clients, reused = _clients_for(key, bootstrap, options, spec.timeout, watchdog)
        try:
            _require_topic(clients.admin, options.topic)
            started = time.perf_counter()
            future = clients.producer.send(options.topic, value=_message(options).encode(),
                                           key=options.key.encode() if options.key is not None else None)
            record = future.get(timeout=remaining_s(deadline))
            took = elapsed_ms(started)
        except CheckFailed as exc:
            # The broker answered (say, "no such topic"): the connection is
            # fine, unless the watchdog aborted it meanwhile.
            if watchdog.fired:
                _discard(key, clients, bootstrap, exc)
            raise
        except Exception as exc:
            _discard(key, clients, bootstrap, exc)
            if watchdog.fired or isinstance(exc, kafka_errors.KafkaError):
                raise CheckFailed(failure_reason(exc, bootstrap, spec.timeout, watchdog.fired)) from None
            raise
    if watchdog.fired:
        # The answer came, but only after the watchdog had aborted the clients.
        _discard(key, clients, bootstrap, TimeoutError())
        raise CheckFailed(failure_reason(TimeoutError(), bootstrap, spec.timeout, timed_out=True))
    return CheckResult(
        is_ok=True, check_type="kafka_producer", response_time_ms=took,
        metadata={
            "topic": record.topic,
            "partition": record.partition,
            # With acks=0 the broker never says where the message went;
            # kafka-python 3.0.12 then reports a made-up offset 0.
            "offset": record.offset if options.acks != 0 and record.offset >= 0 else None,
            "acks": options.acks,
            "reusedClient": reused,
        })


def close_clients() -> None:
    """Close every cached client: at shutdown, or when a test's broker goes away."""
    with _clients_lock:
        cached = list(_clients.values())
        _clients.clear()
    for clients in cached:
        clients.close()


def _message(options: Options) -> str:
    if options.message is not None:
        return options.message
    return json.dumps({"monitor": CLIENT_ID, "sentAt": datetime.now(timezone.utc).isoformat()})


def _require_topic(admin: KafkaAdminClient, topic: str) -> None:
    """Raise CheckFailed unless the broker knows ``topic``, without creating it."""
    described = admin.describe_topics([topic])
    found = next((t for t in described if t["name"] == topic), None)
    if found is None:
        raise CheckFailed(f"topic {topic!r} does not exist")
    reason = topic_error(topic, found["error_code"])
    if reason:
        raise CheckFailed(reason)
    if not found["partitions"]:
        raise CheckFailed(f"topic {topic!r} has no partitions")


def _clients_for(key: tuple, bootstrap: str, options: Options, timeout: float,
                 watchdog: Watchdog) -> tuple[_Clients, bool]:
    """The cached clients for ``key``, or new ones; and whether they were cached."""
    with _clients_lock:
        found = _clients.get(key)
        if found is not None:
            _clients.move_to_end(key)
    if found is not None:
        watchdog.watch(*found.net_clients)
        return found, True
    # Connect outside the lock: an unreachable cluster takes the whole timeout
    # to fail, and must not hold up the checks of every other cluster.
    created = _connect(bootstrap, options, timeout, watchdog)
    evicted = None
    with _clients_lock:
        found = _clients.get(key)
        if found is None:
            _clients[key] = created
            if len(_clients) > MAX_CACHED_CLIENTS:
                _, evicted = _clients.popitem(last=False)
    if found is not None:
        # Another check of the same cluster connected first; use its clients.
        created.close()
        watchdog.watch(*found.net_clients)
        return found, True
    if evicted is not None:
        evicted.close()
    return created, False


def _connect(bootstrap: str, options: Options, timeout: float, watchdog: Watchdog) -> _Clients:
    from kafka import KafkaAdminClient, KafkaProducer

    look_up_bootstrap(bootstrap, watchdog.deadline, timeout)
    producer_settings = client_settings(bootstrap, options, timeout, watchdog.deadline)
    producer_settings.update(
        acks=options.acks,
        # Idempotence would need the IDEMPOTENT_WRITE permission on older
        # clusters and buys a one-message probe nothing.
        enable_idempotence=False,
        # Bound the waits a send can make (for metadata, for delivery and
        # its retries) by the check's timeout instead of 60 s and 120 s.
        max_block_ms=timeout_ms(timeout),
        delivery_timeout_ms=timeout_ms(timeout),
        linger_ms=0,
        # Stated for intent; see _Clients for why topics are checked first.
        allow_auto_create_topics=False,
        metrics_enabled=False,
    )
    producer, producer_net = open_client(KafkaProducer, producer_settings, timeout, watchdog)
    try:
        admin_settings = client_settings(bootstrap, options, timeout, watchdog.deadline)
        admin, admin_net = open_client(KafkaAdminClient, admin_settings, timeout, watchdog)
    except BaseException:
        producer.close(timeout=0)
        raise
    return _Clients(producer=producer, admin=admin, net_clients=(producer_net, admin_net))


def _discard(key: tuple, clients: _Clients, bootstrap: str, exc: Exception) -> None:
    """Forget ``clients`` after an error, so the next check connects afresh."""
    with _clients_lock:
        # Only if still cached: a concurrent check may already have replaced them.
        if _clients.get(key) is clients:
            del _clients[key]
    logger.info("dropping Kafka producer for %s after %s", bootstrap, type(exc).__name__)
    # A concurrent check still using these clients fails too; it was
    # talking to the same failing cluster.
    clients.close()
