"""TCP check against real listeners on loopback."""
from __future__ import annotations

import socket

import pytest

from app.checks import run_check

TIMEOUT = 2.0


def tcp_check(host: str, port: int | None, timeout: float = TIMEOUT):
    return run_check("tcp", host, port, timeout, {})


@pytest.fixture
def listener(listen):
    return listen("127.0.0.1")


def closed_port() -> int:
    # Bound then closed: nothing listens there, so connecting is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_it_reports_up_for_a_listening_port(listener):
    result = tcp_check("127.0.0.1", listener)

    assert result.is_ok, result.failure_reason
    assert result.check_type == "tcp"
    assert result.response_time_ms > 0
    assert result.metadata == {"address": "127.0.0.1", "port": listener}


def test_it_resolves_a_host_name(listener):
    result = tcp_check("localhost", listener)

    assert result.is_ok, result.failure_reason
    assert result.metadata == {"address": "127.0.0.1", "port": listener}


def test_it_connects_over_ipv6(listen):
    port = listen("::1")

    result = tcp_check("::1", port)

    assert result.is_ok, result.failure_reason
    assert result.metadata == {"address": "::1", "port": port}


def test_it_tries_each_address_in_turn(resolver, listener):
    # Nothing listens on 127.0.0.2: refused, as by a host that is down.
    resolver.answer("twice.test", ["127.0.0.2", "127.0.0.1"])

    result = tcp_check("twice.test", listener)

    assert result.is_ok, result.failure_reason
    assert result.metadata == {"address": "127.0.0.1", "port": listener}


def test_it_reports_connection_refused():
    port = closed_port()

    result = tcp_check("127.0.0.1", port)

    assert not result.is_ok
    assert result.failure_reason == f"connection to 127.0.0.1:{port} failed: Connection refused"


def test_it_reports_an_unknown_host(resolver):
    resolver.unknown("nowhere.test")

    result = tcp_check("nowhere.test", 80)

    assert not result.is_ok
    assert result.failure_reason == "cannot resolve nowhere.test: Name or service not known"


def test_it_needs_a_port():
    result = tcp_check("127.0.0.1", None)

    assert not result.is_ok
    assert result.failure_reason == "no port given"
