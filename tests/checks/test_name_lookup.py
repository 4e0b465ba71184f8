"""Name lookups count against the timeout of HTTP, TCP and ping checks, and a
name whose DNS hangs holds one lookup thread, not one per check.

Lookups go through the system resolver to a real DNS server that answers,
refuses or stays silent (``tests/peers/dns.py``), inside a network namespace
of the test's own; every connection goes to loopback.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.checks import resolve, run_check

TIMEOUT = 0.5
# Generous: the point is that the check ends near its timeout, not after
# the resolver's own retries.
SLACK = 1.5
SLOW_HOST = "slow-dns.test"
HEALTHY_HOST = "healthy.test"


class NoLookups:
    """Stands in for the lookup pool where nothing may be submitted to it."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    def submit(self, fn, host, *args, **kwargs):
        self.submitted.append(host)
        raise AssertionError(f"{host} was looked up on the pool")


def timed_check(check_type: str, target: str, port: int | None, timeout: float = TIMEOUT):
    """The check's result and how long it took, in seconds."""
    started = time.perf_counter()
    result = run_check(check_type, target, port, timeout, {})
    return result, time.perf_counter() - started


def wait_until_asked(resolver, hosts: list[str]) -> None:
    """Returns once every one of ``hosts`` is being looked up."""
    give_up = time.monotonic() + 10
    while not set(hosts) <= set(resolver.asked):
        assert time.monotonic() < give_up, f"not looked up: {set(hosts) - set(resolver.asked)}"
        time.sleep(0.01)


@pytest.mark.parametrize(("check_type", "target", "port"), [
    ("http", f"http://{SLOW_HOST}/health", None),
    ("http", f"https://{SLOW_HOST}:8443/", None),
    ("tcp", SLOW_HOST, 5432),
    ("ping", SLOW_HOST, None),
])
def test_it_reports_a_lookup_that_outlasts_the_timeout(resolver, check_type, target, port):
    resolver.hang(SLOW_HOST)

    result, took = timed_check(check_type, target, port)

    assert not result.is_ok
    assert result.failure_reason == f"name lookup for {SLOW_HOST} timed out after {TIMEOUT:g} s"
    assert took < TIMEOUT + SLACK
    assert SLOW_HOST in resolver.asked


def test_it_looks_a_hanging_name_up_once_for_all_the_checks_waiting_on_it(resolver):
    resolver.hang(SLOW_HOST)
    checks = 40  # more than the old pool of 16 threads

    with ThreadPoolExecutor(max_workers=checks) as pool:
        outcomes = list(pool.map(lambda _: timed_check("tcp", SLOW_HOST, 5432), range(checks)))

    assert resolver.asked.count(SLOW_HOST) == 1
    for result, took in outcomes:
        assert result.failure_reason == f"name lookup for {SLOW_HOST} timed out after {TIMEOUT:g} s"
        assert took < TIMEOUT + SLACK


def test_it_answers_a_healthy_name_while_other_names_hang(resolver, listen):
    # More than the old pool of 16 threads, fewer than the pool has now.
    hanging = [f"stuck-{n}.test" for n in range(24)]
    assert len(hanging) < resolve.DEFAULT_LOOKUP_THREADS
    for host in hanging:
        resolver.hang(host)
    resolver.answer(HEALTHY_HOST, ["127.0.0.1"])
    port = listen()

    with ThreadPoolExecutor(max_workers=len(hanging)) as pool:
        stuck = [pool.submit(timed_check, "tcp", host, port, 30.0) for host in hanging]
        wait_until_asked(resolver, hanging)

        result = run_check("tcp", HEALTHY_HOST, port, TIMEOUT, {})

        resolver.release()
    assert result.is_ok, result.failure_reason
    assert result.metadata == {"address": "127.0.0.1", "port": port}
    for check in stuck:
        assert check.result()[0].failure_reason.startswith("cannot resolve stuck-")


@pytest.mark.parametrize("outcome", ["answered", "failed"])
def test_it_looks_a_name_up_again_once_the_last_lookup_has_ended(resolver, listen, outcome):
    port = listen()
    if outcome == "answered":
        resolver.answer(HEALTHY_HOST, ["127.0.0.1"])
    else:
        resolver.unknown(HEALTHY_HOST)

    first = run_check("tcp", HEALTHY_HOST, port, TIMEOUT, {})
    second = run_check("tcp", HEALTHY_HOST, port, TIMEOUT, {})

    assert first.is_ok == second.is_ok == (outcome == "answered")
    assert resolver.asked.count(HEALTHY_HOST) == 2
    # Nor is it kept as a finished lookup, answer and all, for every name
    # ever checked. (A future runs its callbacks just after waking its
    # waiters, so the entry may outlive the check by a moment.)
    give_up = time.monotonic() + 5
    while resolve._in_flight and time.monotonic() < give_up:
        time.sleep(0.01)
    assert resolve._in_flight == {}


def test_it_keeps_the_deadline_when_more_names_hang_than_there_are_threads(resolver, monkeypatch, listen):
    # The documented bound: past the pool's size, lookups of other names
    # queue, and the queueing counts against their checks' deadline.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-lookup")
    monkeypatch.setattr(resolve, "_lookups", pool)
    resolver.hang(SLOW_HOST)
    resolver.answer(HEALTHY_HOST, ["127.0.0.1"])
    with ThreadPoolExecutor(max_workers=1) as checks:
        stuck = checks.submit(timed_check, "tcp", SLOW_HOST, 5432, 30.0)
        wait_until_asked(resolver, [SLOW_HOST])

        result, took = timed_check("tcp", HEALTHY_HOST, listen())

        resolver.release()
    assert result.failure_reason == f"name lookup for {HEALTHY_HOST} timed out after {TIMEOUT:g} s"
    assert took < TIMEOUT + SLACK
    assert stuck.result()[0].failure_reason.startswith(f"cannot resolve {SLOW_HOST}")
    pool.shutdown(wait=True)


def test_configure_gives_lookups_more_threads_for_more_checks(resolver, monkeypatch, listen):
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-lookup")
    monkeypatch.setattr(resolve, "_lookups", pool)
    monkeypatch.setattr(resolve, "_lookup_threads", 2)
    hanging = ["stuck-1.test", "stuck-2.test"]
    for host in hanging:
        resolver.hang(host)
    resolver.answer(HEALTHY_HOST, ["127.0.0.1"])
    port = listen()

    resolve.configure(1)  # fewer: left as it is
    assert resolve._lookups is pool
    resolve.configure(3)
    with ThreadPoolExecutor(max_workers=len(hanging)) as checks:
        stuck = [checks.submit(timed_check, "tcp", host, port, 30.0) for host in hanging]
        wait_until_asked(resolver, hanging)

        result = run_check("tcp", HEALTHY_HOST, port, TIMEOUT, {})

        resolver.release()
    assert result.is_ok, result.failure_reason
    for check in stuck:
        assert not check.result()[0].is_ok
    pool.shutdown(wait=True)


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


@pytest.mark.parametrize("check_type", ["kafka_producer", "kafka_consumer"])
def test_a_kafka_check_of_a_name_whose_dns_hangs_ends_at_its_timeout(resolver, check_type):
    """kafka-python's own lookups cannot be cut short, so the check looks
    the bootstrap names up first, within its deadline."""
    resolver.hang(SLOW_HOST)
    started = time.perf_counter()
    result = run_check(check_type, f"{SLOW_HOST}:9092", None, TIMEOUT, {"topic": "probe"})
    took = time.perf_counter() - started
    assert not result.is_ok
    assert result.failure_reason == f"name lookup for {SLOW_HOST} timed out after {TIMEOUT:g} s"
    assert took < TIMEOUT + SLACK, took


@pytest.mark.parametrize("servers", [
    f"{SLOW_HOST}:9092,[::1]:1",                          # an IP literal: no lookup at all
    f"no-such-broker.test:9092,{HEALTHY_HOST}:1",         # one name that resolves is enough
    f"{SLOW_HOST}:9092,no-such-broker.test,{HEALTHY_HOST}",  # looked up at once: the hung one costs nothing
])
def test_one_bootstrap_server_that_resolves_is_enough(resolver, servers):
    from app.checks.kafka_common import look_up_bootstrap

    resolver.hang(SLOW_HOST)
    resolver.unknown("no-such-broker.test")
    resolver.answer(HEALTHY_HOST, ["127.0.0.1"])
    started = time.perf_counter()
    look_up_bootstrap(servers, time.monotonic() + 5, 5)
    assert time.perf_counter() - started < 2
    if "[::1]" in servers:
        assert resolver.asked == []


def test_no_bootstrap_server_that_resolves_is_down_with_the_first_reason(resolver):
    from app.checks.base import CheckFailed
    from app.checks.kafka_common import look_up_bootstrap

    resolver.unknown("a.test")
    resolver.unknown("b.test")
    with pytest.raises(CheckFailed, match="cannot resolve a.test"):
        look_up_bootstrap("a.test:9092,b.test", time.monotonic() + TIMEOUT, TIMEOUT)
    resolver.hang(SLOW_HOST)
    with pytest.raises(CheckFailed, match=f"name lookup for {SLOW_HOST} timed out after {TIMEOUT:g} s"):
        look_up_bootstrap(f"{SLOW_HOST}:9092,b.test", time.monotonic() + TIMEOUT, TIMEOUT)
