"""ICMP check: echo requests with ping3, judged on packet loss; RTT as response time.

Raw ICMP sockets need root (or ``net.ipv4.ping_group_range`` for the
unprivileged fallback ping3 tries on its own).
"""
from __future__ import annotations

import socket
import time

import ping3
from ping3 import errors as ping_errors
from pydantic import Field

from app.checks.base import CheckFailed, CheckOptions, CheckResult, CheckSpec
from app.checks.resolve import resolve

# A shorter wait per packet than this would report loss on any busy link.
MIN_PACKET_TIMEOUT = 0.1


class Options(CheckOptions):
    """Settings of an ICMP check; ``spec.target`` is a host name or address."""

    count: int = Field(3, ge=1, le=10)
    # Seconds from one packet's send to the next, as ``ping -i``.
    interval: float = Field(0.2, ge=0, le=10)
    max_packet_loss_percent: float = Field(0, ge=0, le=100)


def check(spec: CheckSpec) -> CheckResult:
    """Send ``count`` echo requests to ``spec.target`` within ``spec.timeout``."""
    options: Options = spec.options
    started = time.perf_counter()
    deadline = started + spec.timeout
    address, version = _resolve(spec.target, deadline, spec.timeout)
    per_packet = max(MIN_PACKET_TIMEOUT, spec.timeout / options.count)

    rtts: list[float] = []
    errors: list[str] = []
    sent = 0
    last_send = None
    for seq in range(options.count):
        if last_send is not None:
            # Paced send to send: a packet that timed out has used up its
            # share of the interval already.
            pause = last_send + options.interval - time.perf_counter()
            if pause > 0:
                time.sleep(min(pause, max(deadline - time.perf_counter(), 0)))
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            break  # the deadline is firm; unsent packets count as lost below
        last_send = time.perf_counter()
        sent += 1
        rtt, error = _ping_once(address, version, seq, min(per_packet, remaining))
        if rtt is not None:
            rtts.append(rtt)
        elif error:
            errors.append(error)

    received = len(rtts)
    # Over the packets asked for, not those sent: a packet the deadline left
    # no time for is as unanswered as one that timed out.
    loss = round((options.count - received) * 100.0 / options.count, 1)
    metadata = {
        "address": address,
        "packetsSent": sent,
        "packetsReceived": received,
        "packetLossPercent": loss,
        "rttMinMs": round(min(rtts), 3) if rtts else None,
        "rttAvgMs": round(sum(rtts) / received, 3) if rtts else None,
        "rttMaxMs": round(max(rtts), 3) if rtts else None,
    }
    reason = None
    if not rtts:
        if errors:
            reason = f"no reply from {spec.target} ({address}): {errors[-1]}"
        else:
            reason = (f"no reply from {spec.target} ({address}): {sent} of {options.count} packets sent, "
                      f"none answered within {per_packet:g} s (timed out after {spec.timeout:g} s)")
    elif loss > options.max_packet_loss_percent:
        reason = (f"packet loss {loss:g}% ({received} of {options.count} answered) "
                  f"exceeds {options.max_packet_loss_percent:g}%")
    return CheckResult(is_ok=reason is None, check_type="ping",
                       response_time_ms=metadata["rttAvgMs"], failure_reason=reason, metadata=metadata)


def _resolve(host: str, deadline: float, timeout: float) -> tuple[str, int]:
    """The address to ping and its IP version; resolved once, not per packet."""
    host = host.strip().removeprefix("[").removesuffix("]")
    if not host:
        raise CheckFailed("no host given")
    infos = resolve(host, None, deadline=deadline, timeout=timeout, socktype=socket.SOCK_RAW)
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return sockaddr[0], 4 if family == socket.AF_INET else 6
    raise CheckFailed(f"cannot resolve {host}: no IPv4 or IPv6 address")


def _ping_once(address: str, version: int, seq: int, timeout: float) -> tuple[float | None, str | None]:
    """One echo request: (RTT in ms, None), or (None, why) where why is None for a plain timeout."""
    try:
        rtt = ping3.ping(address, timeout=timeout, unit="ms", seq=seq, version=version)
    except PermissionError:
        raise CheckFailed("not permitted to send ICMP: run as root, or allow unprivileged ICMP "
                          "with the net.ipv4.ping_group_range sysctl") from None
    except ping_errors.Timeout:
        # Only if something else in the process set ping3.EXCEPTIONS.
        return None, None
    except ping_errors.PingError as exc:
        return None, str(exc)
    except OSError as exc:  # ping3 lets sendto's errors through, e.g. no route
        return None, exc.strerror or str(exc)
    if rtt is None:
        return None, None
    if rtt is False:
        # ping3 folds every ICMP error reply into False.
        return None, "destination unreachable or TTL exceeded"
    return rtt, None
