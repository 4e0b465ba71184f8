"""Kafka consumer check: can a topic be read, and how fresh is its newest message.

``spec.target`` is the bootstrap servers, ``host:port[,host:port]``. The
newest message of each partition is read by direct assignment, never by
joining a consumer group: a probe must not trigger rebalances of, or commit
offsets for, the applications that own the topic. The response time runs
from asking for the partitions' offsets until their newest messages are in.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from app.checks.base import CheckFailed, CheckResult, CheckSpec, elapsed_ms
from app.checks.kafka_common import (
    KafkaSecurityOptions, Topic, Watchdog, bootstrap_servers, client_settings, failure_reason,
    look_up_bootstrap, open_client, remaining_ms, remaining_s, timeout_ms,
)

if TYPE_CHECKING:
    from kafka import KafkaConsumer, TopicPartition


class Options(KafkaSecurityOptions):
    topic: Topic
    # None reads every partition of the topic.
    partitions: list[int] | None = Field(default=None, min_length=1)
    # DOWN when the newest message is older than this; an empty topic then
    # has no fresh message either, so it is DOWN too.
    max_message_age_seconds: float | None = Field(default=None, gt=0)
    require_message: bool = False

    @field_validator("partitions")
    @classmethod
    def _distinct_partition_numbers(cls, value):
        if value is None:
            return value
        if any(p < 0 for p in value):
            raise ValueError("partition numbers cannot be negative")
        return sorted(set(value))


def check(spec: CheckSpec) -> CheckResult:
    """Read the newest message of each partition of ``options.topic``."""
    from kafka import KafkaConsumer
    from kafka import errors as kafka_errors

    options: Options = spec.options
    bootstrap = bootstrap_servers(spec.target)
    deadline = time.monotonic() + spec.timeout
    look_up_bootstrap(bootstrap, deadline, spec.timeout)
    with Watchdog(deadline) as watchdog:
        # A new consumer per check: its assignment and positions are per-check
        # state, and a shared one would have to serialise every check of a cluster.
        consumer, _ = open_client(KafkaConsumer, _consumer_settings(bootstrap, options, spec.timeout, deadline),
                                  spec.timeout, watchdog)
        try:
            result = _read_newest(consumer, options, spec.timeout, deadline)
        except CheckFailed:
            raise
        except Exception as exc:
            if watchdog.fired or isinstance(exc, kafka_errors.KafkaError):
                raise CheckFailed(failure_reason(exc, bootstrap, spec.timeout, watchdog.fired)) from None
            raise
        finally:
            # Nothing to commit without a group, so there is nothing to wait for.
            consumer.close(autocommit=False, timeout_ms=0)
    if watchdog.fired:
        raise CheckFailed(failure_reason(TimeoutError(), bootstrap, spec.timeout, timed_out=True))
    return result


def _consumer_settings(bootstrap: str, options: Options, timeout: float, deadline: float) -> dict:
    settings = client_settings(bootstrap, options, timeout, deadline)
    settings.update(
        group_id=None,
        enable_auto_commit=False,
        # kafka-python requires fetch_max_wait_ms < request_timeout_ms; the
        # fetches here start at existing messages, so they rarely wait at all.
        fetch_max_wait_ms=min(500, timeout_ms(timeout) // 2),
        # kafka-python 3.0.12 does not pass this on, but topic lookups below
        # ask for all topics, which never creates one.
        allow_auto_create_topics=False,
        metrics_enabled=False,
    )
    return settings


def _read_newest(consumer: KafkaConsumer, options: Options, timeout: float, deadline: float) -> CheckResult:
    from kafka import TopicPartition

    topic = options.topic
    tps = [TopicPartition(topic, p) for p in _partitions(consumer, options)]

    started = time.perf_counter()
    beginning = consumer.beginning_offsets(tps, timeout_ms=remaining_ms(deadline))
    end = consumer.end_offsets(tps, timeout_ms=remaining_ms(deadline))
    newest = _fetch_newest(consumer, [tp for tp in tps if end[tp] > beginning[tp]], end, timeout, deadline)
    took = elapsed_ms(started)

    stamps = {tp: record.timestamp for tp, record in newest.items() if record.timestamp >= 0}
    age = None
    if stamps:
        # Clamped: a producer whose clock runs ahead stamps messages "in the
        # future", which is fresh, not negative-aged.
        age = round(max(0.0, time.time() - max(stamps.values()) / 1000.0), 3)
    # Offsets, not a count of readable messages: compaction and transaction
    # markers leave gaps, so this is an upper bound.
    total = sum(end[tp] - beginning[tp] for tp in tps)
    metadata = {
        "topic": topic,
        "partitions": [
            {"partition": tp.partition, "beginningOffset": beginning[tp], "endOffset": end[tp],
             "newestTimestamp": _iso(stamps.get(tp))}
            for tp in tps
        ],
        "messageAgeSeconds": age,
        "totalMessages": total,
    }

    # Returned rather than raised, so a DOWN result keeps the offsets and age
    # that explain it.
    reason = _staleness(options, total, age)
    return CheckResult(is_ok=reason is None, check_type="kafka_consumer", response_time_ms=took,
                       failure_reason=reason, metadata=metadata)


def _staleness(options: Options, total: int, age: float | None) -> str | None:
    """Why what was read is not fresh enough, or None if it is."""
    where = _where(options)
    limit = options.max_message_age_seconds
    if total == 0 and (options.require_message or limit is not None):
        return f"{where} has no messages"
    if limit is None:
        return None
    if age is None:
        return f"the newest message in {where} carries no timestamp"
    if age > limit:
        return f"the newest message in {where} is {age:.1f} s old (limit {limit:g} s)"
    return None


def _partitions(consumer: KafkaConsumer, options: Options) -> list[int]:
    """The partitions to read, after checking that the topic has them."""
    # Looked up in the metadata of all topics: a request naming the topic
    # would create it on brokers that auto-create topics.
    available = consumer.partitions_for_topic(options.topic)
    if not available:
        raise CheckFailed(f"topic {options.topic!r} does not exist")
    if options.partitions is None:
        return sorted(available)
    missing = [p for p in options.partitions if p not in available]
    if missing:
        raise CheckFailed(f"topic {options.topic!r} has no partition {', '.join(map(str, missing))} "
                          f"(it has {len(available)}: 0-{max(available)})")
    return options.partitions


def _fetch_newest(consumer: KafkaConsumer, tps: list[TopicPartition], end: dict, timeout: float,
                  deadline: float) -> dict:
    """The newest record of each partition in ``tps`` (all of which hold messages)."""
    newest = {}
    if not tps:
        return newest
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, end[tp] - 1)
    pending = set(tps)
    while pending and remaining_s(deadline) > 0:
        for tp, records in consumer.poll(timeout_ms=remaining_ms(deadline)).items():
            # More than one record when messages arrived since end_offsets.
            newest[tp] = max(records, key=lambda r: r.offset)
        # A partition is also done once its position passes the old end
        # without a record: its last offset held a transaction marker.
        pending = {tp for tp in pending
                   if tp not in newest and consumer.position(tp, timeout_ms=remaining_ms(deadline)) < end[tp]}
    if pending:
        numbers = ", ".join(str(tp.partition) for tp in sorted(pending))
        raise CheckFailed(f"could not read the newest message of partition(s) {numbers} "
                          f"of topic {tps[0].topic!r} within {timeout:g} s")
    return newest


def _where(options: Options) -> str:
    """What was read, in words, for DOWN reasons."""
    if options.partitions is None:
        return f"topic {options.topic!r}"
    return f"partition(s) {', '.join(map(str, options.partitions))} of topic {options.topic!r}"


def _iso(timestamp_ms: int | None) -> str | None:
    if timestamp_ms is None:
        return None
    return datetime.fromtimestamp(timestamp_ms / 1000.0, tz=timezone.utc).isoformat()
