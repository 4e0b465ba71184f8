"""ICMP check against loopback and a network namespace the test makes itself."""
from __future__ import annotations

import os
import subprocess

import pytest
from pydantic import ValidationError

from app.checks import CHECK_TYPES, run_check


def ping_check(host: str, timeout: float = 2.0, **options):
    return run_check("ping", host, None, timeout, options)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@pytest.fixture
def silent_address():
    """An address in a test-made namespace that answers ARP but ignores echo requests.

    The namespace sits behind a veth pair; its own ``icmp_echo_ignore_all``
    sysctl (per namespace) drops the pings, so they time out like those to a
    host that filters ICMP, and no packet leaves this machine.
    """
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    tag = os.getpid()
    namespace, host_side, ns_side = f"epm-ping-{tag}", f"epmh{tag}", f"epmp{tag}"
    subnet = f"10.254.{tag % 250 + 1}"
    # Only the default route may cover it, or the test would shadow a real network.
    routes = ip("-4", "route", "show", "to", "match", f"{subnet}.2").stdout.splitlines()
    if any(not line.startswith("default") for line in routes if line.strip()):
        pytest.skip(f"{subnet}.0/30 is already routed on this machine")
    try:
        ip("netns", "add", namespace)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace: {exc.stderr.strip()}")
    try:
        ip("link", "add", host_side, "type", "veth", "peer", "name", ns_side, "netns", namespace)
        ip("addr", "add", f"{subnet}.1/30", "dev", host_side)
        ip("link", "set", host_side, "up")
        ip("netns", "exec", namespace, "ip", "addr", "add", f"{subnet}.2/30", "dev", ns_side)
        ip("netns", "exec", namespace, "ip", "link", "set", ns_side, "up")
        subprocess.run(["ip", "netns", "exec", namespace, "sh", "-c",
                        "echo 1 > /proc/sys/net/ipv4/icmp_echo_ignore_all"], check=True)
        yield f"{subnet}.2"
    finally:
        ip("link", "del", host_side, check=False)
        ip("netns", "del", namespace, check=False)


def test_it_reports_up_for_loopback():
    result = ping_check("127.0.0.1", count=3, interval=0.05)

    assert result.is_ok, result.failure_reason
    assert result.check_type == "ping"
    meta = result.metadata
    assert meta["packetsSent"] == 3
    assert meta["packetsReceived"] == 3
    assert meta["packetLossPercent"] == 0
    assert 0 < meta["rttMinMs"] <= meta["rttAvgMs"] <= meta["rttMaxMs"]
    assert result.response_time_ms == meta["rttAvgMs"]


def test_it_resolves_a_host_name():
    result = ping_check("localhost", count=1)

    assert result.is_ok, result.failure_reason
    assert result.metadata["address"] in ("127.0.0.1", "::1")


def test_it_reports_an_unknown_host(resolver):
    # The test's DNS server says it does not exist (NXDOMAIN).
    resolver.unknown("no-such-host.invalid")

    result = ping_check("no-such-host.invalid")

    assert not result.is_ok
    assert result.failure_reason.startswith("cannot resolve no-such-host.invalid")


def test_it_times_out_on_an_address_that_ignores_echo(silent_address):
    result = ping_check(silent_address, timeout=0.6, count=2, interval=0)

    assert not result.is_ok
    assert result.failure_reason.startswith(f"no reply from {silent_address}")
    assert "timed out after 0.6 s" in result.failure_reason
    assert result.metadata["packetsSent"] == 2
    assert result.metadata["packetsReceived"] == 0
    assert result.metadata["packetLossPercent"] == 100
    assert result.response_time_ms is None


def test_it_counts_packets_the_deadline_left_no_time_for_as_lost():
    # 10 packets 0.2 s apart cannot all go out within 0.5 s.
    result = ping_check("127.0.0.1", timeout=0.5, count=10, interval=0.2)

    meta = result.metadata
    assert not result.is_ok
    assert 0 < meta["packetsSent"] < 10
    assert meta["packetsReceived"] == meta["packetsSent"]
    assert meta["packetLossPercent"] == (10 - meta["packetsReceived"]) * 10
    assert result.failure_reason.startswith(f"packet loss {meta['packetLossPercent']:g}%")


def test_it_tolerates_loss_up_to_the_allowed_percent():
    result = ping_check("127.0.0.1", timeout=0.5, count=10, interval=0.2, max_packet_loss_percent=90)

    assert result.is_ok, result.failure_reason
    assert result.metadata["packetLossPercent"] <= 90


@pytest.mark.parametrize("options", [
    {"count": 0},
    {"count": 11},
    {"interval": -0.1},
    {"max_packet_loss_percent": 101},
    {"max_packet_loss_percent": -1},
    {"size": 64},
])
def test_it_rejects_invalid_options(options):
    with pytest.raises(ValidationError):
        CHECK_TYPES["ping"].options_model.model_validate(options)
