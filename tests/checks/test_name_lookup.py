"""Name lookups count against every check's timeout.

The hanging resolver is a stand-in (see ``FakeResolver``); ``localhost`` and
IP literals are resolved for real, and every connection goes to loopback.
"""
from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.checks import resolve, run_check

TIMEOUT = 0.5
# Generous: the point is that the check ends near its timeout, not after
# the resolver's own retries.
SLACK = 1.5
SLOW_HOST = "slow-dns.test"


class NoLookups:
    """Stands in for the lookup pool where nothing may be submitted to it."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    def submit(self, fn, host, *args, **kwargs):
        self.submitted.append(host)
        raise AssertionError(f"{host} was looked up on the pool")


@pytest.mark.parametrize(("check_type", "target", "port"), [
    ("http", f"http://{SLOW_HOST}/health", None),
    ("http", f"https://{SLOW_HOST}:8443/", None),
    ("tcp", SLOW_HOST, 5432),
    ("ping", SLOW_HOST, None),
])
def test_it_reports_a_lookup_that_outlasts_the_timeout(resolver, check_type, target, port):
    resolver.hang(SLOW_HOST)
    started = time.perf_counter()

    result = run_check(check_type, target, port, TIMEOUT, {})

    took = time.perf_counter() - started
    assert not result.is_ok
    assert result.failure_reason == f"name lookup for {SLOW_HOST} timed out after {TIMEOUT:g} s"
    assert took < TIMEOUT + SLACK
    assert SLOW_HOST in resolver.asked


def test_it_counts_time_queued_behind_stuck_lookups(resolver, monkeypatch, listen):
    resolver.hang(SLOW_HOST)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-lookup")
    monkeypatch.setattr(resolve, "_lookups", pool)
    stuck = pool.submit(socket.getaddrinfo, SLOW_HOST, 80)

    result = run_check("tcp", "localhost", listen(), TIMEOUT, {})

    assert not result.is_ok
    assert result.failure_reason == f"name lookup for localhost timed out after {TIMEOUT:g} s"
    resolver.released.set()
    pool.shutdown(wait=True)
    assert stuck.exception() is not None
    # Given up while still queued, so it never ran.
    assert "localhost" not in resolver.asked


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_it_connects_to_an_ip_literal_without_the_lookup_pool(monkeypatch, listen, address):
    no_lookups = NoLookups()
    monkeypatch.setattr(resolve, "_lookups", no_lookups)
    port = listen(address)

    result = run_check("tcp", address, port, TIMEOUT, {})

    assert result.is_ok, result.failure_reason
    assert result.metadata == {"address": address, "port": port}
    assert no_lookups.submitted == []


def test_it_pings_an_ip_literal_without_the_lookup_pool(monkeypatch):
    no_lookups = NoLookups()
    monkeypatch.setattr(resolve, "_lookups", no_lookups)

    result = run_check("ping", "127.0.0.1", None, 2.0, {"count": 1})

    assert result.is_ok, result.failure_reason
    assert no_lookups.submitted == []

