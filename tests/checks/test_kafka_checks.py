"""Kafka producer and consumer checks against a real broker (Tansu) on loopback."""
from __future__ import annotations

import re
import signal
import socket
import threading
import time

import pytest
from pydantic import ValidationError

from app.checks import CHECK_TYPES, kafka_producer, run_check
from tests.peers.kafka import TansuBroker, create_topic, free_port, list_topics, start_tansu

TIMEOUT = 3.0
# Slack for thread scheduling and interpreter overhead on a busy machine; a
# check that ignored its timeout would overrun by kafka-python's 30-60 s.
MARGIN = 1.5


def produce(bootstrap: str, timeout: float = TIMEOUT, **options):
    return run_check("kafka_producer", bootstrap, None, timeout, options)


def consume(bootstrap: str, timeout: float = TIMEOUT, **options):
    return run_check("kafka_consumer", bootstrap, None, timeout, options)


@pytest.fixture(scope="module")
def bootstrap():
    with start_tansu() as address:
        yield address
    # Cached producers point at the broker just stopped.
    kafka_producer.close_clients()


@pytest.fixture
def topic(bootstrap, request) -> str:
    """A new single-partition topic named after the test."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)
    create_topic(bootstrap, name)
    return name


@pytest.fixture
def closed_port() -> int:
    return free_port()


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_it_produces_a_message_and_reports_its_offset(bootstrap, topic):
    first = produce(bootstrap, topic=topic)
    second = produce(bootstrap, topic=topic, message="hello", key="k")

    assert first.status == "UP", first.failure_reason
    assert first.metadata["topic"] == topic
    assert first.metadata["partition"] == 0
    assert first.metadata["offset"] == 0
    assert first.response_time_ms > 0
    assert second.status == "UP", second.failure_reason
    assert second.metadata["offset"] == 1
    assert second.metadata["reusedClient"] is True


def test_it_produces_without_waiting_for_an_ack_when_acks_is_zero(bootstrap, topic):
    result = produce(bootstrap, topic=topic, acks="0")

    assert result.status == "UP", result.failure_reason
    assert result.metadata["acks"] == 0
    assert result.metadata["offset"] is None


def test_it_reads_the_newest_message_after_producing(bootstrap):
    create_topic(bootstrap, "two-partitions", partitions=2)
    produced = [produce(bootstrap, topic="two-partitions", key="same-key") for _ in range(3)]

    result = consume(bootstrap, topic="two-partitions")

    assert all(p.status == "UP" for p in produced), [p.failure_reason for p in produced]
    written_to = produced[0].metadata["partition"]
    assert result.status == "UP", result.failure_reason
    by_partition = {p["partition"]: p for p in result.metadata["partitions"]}
    assert set(by_partition) == {0, 1}
    assert by_partition[written_to]["beginningOffset"] == 0
    assert by_partition[written_to]["endOffset"] == 3
    assert by_partition[written_to]["newestTimestamp"] is not None
    assert by_partition[1 - written_to]["endOffset"] == 0
    assert by_partition[1 - written_to]["newestTimestamp"] is None
    assert result.metadata["totalMessages"] == 3
    assert 0 <= result.metadata["messageAgeSeconds"] < 30
    assert result.response_time_ms > 0


def test_it_reads_only_the_partitions_asked_for(bootstrap):
    create_topic(bootstrap, "one-of-two", partitions=2)

    result = consume(bootstrap, topic="one-of-two", partitions=[1])
    missing = consume(bootstrap, topic="one-of-two", partitions=[5])

    assert result.status == "UP", result.failure_reason
    assert [p["partition"] for p in result.metadata["partitions"]] == [1]
    assert missing.status == "DOWN"
    assert missing.failure_reason == "topic 'one-of-two' has no partition 5 (it has 2: 0-1)"


def test_it_is_down_when_the_newest_message_is_too_old(bootstrap, topic):
    assert produce(bootstrap, topic=topic).status == "UP"
    time.sleep(1.5)

    stale = consume(bootstrap, topic=topic, max_message_age_seconds=0.5)
    fresh_enough = consume(bootstrap, topic=topic, max_message_age_seconds=60)

    assert stale.status == "DOWN"
    assert stale.metadata["messageAgeSeconds"] >= 1.5
    assert re.fullmatch(rf"the newest message in topic '{topic}' is \d+\.\d s old \(limit 0.5 s\)",
                        stale.failure_reason), stale.failure_reason
    assert fresh_enough.status == "UP", fresh_enough.failure_reason
    assert fresh_enough.metadata["messageAgeSeconds"] >= 1.5


def test_it_is_down_for_an_empty_topic_when_a_message_is_required(bootstrap, topic):
    required = consume(bootstrap, topic=topic, require_message=True)
    aged = consume(bootstrap, topic=topic, max_message_age_seconds=60)
    optional = consume(bootstrap, topic=topic)

    assert required.status == "DOWN"
    assert required.failure_reason == f"topic '{topic}' has no messages"
    assert required.metadata["totalMessages"] == 0
    assert aged.status == "DOWN"
    assert optional.status == "UP", optional.failure_reason
    assert optional.metadata["totalMessages"] == 0
    assert optional.metadata["messageAgeSeconds"] is None


@pytest.mark.parametrize("check_type", ["kafka_producer", "kafka_consumer"])
def test_it_is_down_for_a_missing_topic_and_does_not_create_it(bootstrap, check_type):
    name = f"missing-for-{check_type}"

    result = run_check(check_type, bootstrap, None, TIMEOUT, {"topic": name})

    assert result.status == "DOWN"
    assert result.failure_reason == f"topic '{name}' does not exist"
    assert name not in list_topics(bootstrap)


@pytest.mark.parametrize("check_type", ["kafka_producer", "kafka_consumer"])
def test_it_is_down_within_the_timeout_when_no_broker_listens(check_type, closed_port):
    started = time.monotonic()
    result = run_check(check_type, f"127.0.0.1:{closed_port}", None, 1.5, {"topic": "any"})
    took = time.monotonic() - started

    assert result.status == "DOWN"
    assert result.failure_reason == f"no Kafka broker at 127.0.0.1:{closed_port} answered within 1.5 s"
    assert took < 1.5 + MARGIN


@pytest.mark.parametrize("check_type", ["kafka_producer", "kafka_consumer"])
def test_it_is_down_within_the_timeout_when_the_broker_never_answers(check_type, silent_port):
    started = time.monotonic()
    result = run_check(check_type, f"127.0.0.1:{silent_port}", None, 1.5, {"topic": "any"})
    took = time.monotonic() - started

    assert result.status == "DOWN"
    assert result.failure_reason == f"no Kafka broker at 127.0.0.1:{silent_port} answered within 1.5 s"
    assert took < 1.5 + MARGIN


@pytest.mark.parametrize("check_type", ["kafka_producer", "kafka_consumer"])
def test_it_is_down_within_the_timeout_when_a_tls_handshake_never_completes(check_type, silent_port):
    # kafka-python alone would wait for this handshake forever.
    started = time.monotonic()
    result = run_check(check_type, f"127.0.0.1:{silent_port}", None, 1.5,
                       {"topic": "any", "security_protocol": "SSL"})
    took = time.monotonic() - started

    assert result.status == "DOWN"
    assert result.failure_reason == f"no Kafka broker at 127.0.0.1:{silent_port} answered within 1.5 s"
    assert took < 1.5 + MARGIN


@pytest.mark.parametrize("check_type", ["kafka_producer", "kafka_consumer"])
def test_it_is_down_within_the_timeout_when_a_connected_broker_hangs(check_type):
    with TansuBroker() as broker:
        try:
            create_topic(broker.bootstrap, "hangs")
            # Connected first, so the producer check reuses a live client.
            assert run_check(check_type, broker.bootstrap, None, 1.5, {"topic": "hangs"}).status == "UP"
            broker.process.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            result = run_check(check_type, broker.bootstrap, None, 1.5, {"topic": "hangs"})
            took = time.monotonic() - started
        finally:
            broker.process.send_signal(signal.SIGCONT)
            kafka_producer.close_clients()

    assert result.status == "DOWN"
    assert "within 1.5 s" in result.failure_reason
    # Bounded by its timeout, not hanging: the stopped broker never answers,
    # so without the watchdog the check would wait on it for good. How close
    # to the timeout it ends is for benchmarks; 5 s of slack (the worker's
    # own grace for an overrunning check) keeps a loaded machine from
    # failing it, as one did at 1.5 s.
    assert took < 1.5 + 5.0


@pytest.mark.parametrize("check_type", ["kafka_producer", "kafka_consumer"])
def test_it_is_down_when_the_ca_file_cannot_be_read(check_type, tmp_path, closed_port):
    missing = tmp_path / "missing-ca.pem"

    result = run_check(check_type, f"127.0.0.1:{closed_port}", None, TIMEOUT,
                       {"topic": "any", "security_protocol": "SSL", "ssl_cafile": str(missing)})

    assert result.status == "DOWN"
    assert result.failure_reason.startswith(f"cannot load ssl_cafile {missing}: ")


@pytest.mark.parametrize("security_protocol", ["PLAINTEXT", "SSL"])
def test_it_does_not_leak_threads_when_the_broker_is_down(security_protocol, closed_port, silent_port):
    port = closed_port if security_protocol == "PLAINTEXT" else silent_port
    options = {"topic": "any", "security_protocol": security_protocol}
    before = threading.active_count()

    for check_type in ("kafka_producer", "kafka_consumer", "kafka_producer", "kafka_consumer"):
        assert run_check(check_type, f"127.0.0.1:{port}", None, 0.5, options).status == "DOWN"

    assert threading.active_count() <= before


def test_it_reconnects_after_the_broker_restarts():
    broker = TansuBroker()
    try:
        broker.start()
        create_topic(broker.bootstrap, "restarts")
        assert produce(broker.bootstrap, topic="restarts").status == "UP"

        broker.stop()
        started = time.monotonic()
        while_down = produce(broker.bootstrap, topic="restarts")
        took = time.monotonic() - started

        broker.start()  # same port, empty memory: the topic must be made again
        create_topic(broker.bootstrap, "restarts")
        after = produce(broker.bootstrap, topic="restarts")
    finally:
        broker.close()
        kafka_producer.close_clients()

    assert while_down.status == "DOWN"
    assert took < TIMEOUT + MARGIN
    assert after.status == "UP", after.failure_reason
    # The client that failed was dropped, not reused against the new broker.
    assert after.metadata["reusedClient"] is False
    assert after.metadata["offset"] == 0


@pytest.mark.parametrize("check_type", ["kafka_producer", "kafka_consumer"])
def test_it_rejects_options_without_a_topic(check_type):
    with pytest.raises(ValidationError) as caught:
        CHECK_TYPES[check_type].options_model.model_validate({})

    assert [e["loc"] for e in caught.value.errors()] == [("topic",)]


@pytest.mark.parametrize("options, complaint", [
    ({"topic": "bad topic"}, "kafka's rule for topic names"),
    ({"topic": "t", "acks": 2}, "input should be 'all', 1 or 0"),
    ({"topic": "t", "security_protocol": "SASL_SSL"}, "sasl_mechanism is required"),
    ({"topic": "t", "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"},
     "sasl_username and sasl_password are required"),
    ({"topic": "t", "sasl_mechanism": "PLAIN"}, "need security_protocol sasl_plaintext or sasl_ssl"),
    ({"topic": "t", "ssl_cafile": "/ca.pem"}, "ssl_cafile needs security_protocol ssl"),
    ({"topic": "t", "surprise": 1}, "extra inputs are not permitted"),
])
def test_it_rejects_invalid_producer_options(options, complaint):
    with pytest.raises(ValidationError) as caught:
        CHECK_TYPES["kafka_producer"].options_model.model_validate(options)

    assert complaint in str(caught.value).lower()


def test_it_accepts_acks_as_text_and_complete_sasl_settings():
    options = CHECK_TYPES["kafka_producer"].options_model.model_validate({
        "topic": "t", "acks": "1", "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "monitor", "sasl_password": "secret", "ssl_cafile": "/ca.pem"})

    assert options.acks == 1
    assert "secret" not in repr(options)


@pytest.mark.parametrize("options", [{"topic": "t", "partitions": [-1]}, {"topic": "t", "partitions": []},
                                     {"topic": "t", "max_message_age_seconds": 0}])
def test_it_rejects_invalid_consumer_options(options):
    with pytest.raises(ValidationError):
        CHECK_TYPES["kafka_consumer"].options_model.model_validate(options)
