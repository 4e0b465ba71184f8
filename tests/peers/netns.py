"""A network namespace of the test's own, joined to this host by a veth pair.

A process started with ``Namespace.exec_prefix`` (``ip netns exec NAME``)
is another location on the same machine: it has its own address
(``ns_address``) and reaches this host only through the veth pair, at
``host_address``, so a test can cut that one location off with
``link_down`` while everything on the host goes on. Nothing is routed
beyond the pair: the namespace has no default route, and the /30 it uses
is one no address or route of this host covers.

Needs root and the ``ip`` command (``unavailable`` says why not).
"""
from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

# Where the /30s are picked from, one after the other.
POOL = ipaddress.ip_network("10.213.0.0/16")
# Held while a /30 is picked and its addresses set, so two test runs on one
# machine never pick the same one.
LOCK_FILE = Path(tempfile.gettempdir()) / "monitor-test-netns.lock"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def unavailable() -> str | None:
    """Why no namespace can be made here, or None when one can."""
    if os.geteuid() != 0:
        return "network namespaces and veth pairs need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    return None


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this host has an address or a route in (the
    default route aside: it covers everything and says nothing)."""
    used = []
    for line in ip("-o", "-4", "addr", "show").stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            used.append(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    for table in ("main", "local"):
        for line in ip("-4", "route", "show", "table", table).stdout.splitlines():
            fields = line.split()
            if not fields or fields[0] == "default":
                continue
            target = fields[1] if fields[0] in ("local", "broadcast", "unicast", "multicast") else fields[0]
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(target, strict=False))
    return used


def free_subnet() -> ipaddress.IPv4Network:
    """The first /30 of ``POOL`` that no address or route of this host overlaps."""
    used = _networks_in_use()
    for subnet in POOL.subnets(new_prefix=30):
        if not any(subnet.overlaps(network) for network in used):
            return subnet
    raise RuntimeError(f"every /30 of {POOL} is in use on this host")


class Namespace:
    """A network namespace with ``lo`` up and a veth pair to this host.

    ``create`` makes it, ``delete`` removes the namespace and the host's
    end of the pair (safe to call twice, and after a half-done ``create``).
    """

    def __init__(self, prefix: str = "montest") -> None:
        tag = uuid.uuid4().hex[:8]
        self.name = f"{prefix}-{tag}"
        # Interface names are at most 15 characters.
        self.host_interface = f"mt{tag}h"
        self.ns_interface = f"mt{tag}n"
        self.subnet: ipaddress.IPv4Network | None = None
        self.host_address: str | None = None
        self.ns_address: str | None = None

    @property
    def exec_prefix(self) -> list[str]:
        """Prefix of a command that runs it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def create(self) -> Namespace:
        try:
            ip("netns", "add", self.name)
            ip("netns", "exec", self.name, "ip", "link", "set", "lo", "up")
            with open(LOCK_FILE, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self.subnet = free_subnet()
                host, peer = (str(address) for address in list(self.subnet.hosts())[:2])
                ip("link", "add", self.host_interface, "type", "veth", "peer", "name", self.ns_interface,
                   "netns", self.name)
                ip("addr", "add", f"{host}/{self.subnet.prefixlen}", "dev", self.host_interface)
                ip("-n", self.name, "addr", "add", f"{peer}/{self.subnet.prefixlen}", "dev", self.ns_interface)
            ip("link", "set", self.host_interface, "up")
            ip("-n", self.name, "link", "set", self.ns_interface, "up")
        except BaseException:
            self.delete()
            raise
        self.host_address, self.ns_address = host, peer
        return self

    def link_down(self) -> None:
        """Cut the namespace off: the host's end of the pair goes down. The
        host keeps its address there (its local route stays), so servers on
        the host bound to ``host_address`` still answer the host."""
        ip("link", "set", self.host_interface, "down")

    def link_up(self) -> None:
        ip("link", "set", self.host_interface, "up")

    def link_is_up(self) -> bool:
        return "UP" in ip("-o", "link", "show", self.host_interface).stdout.split("<", 1)[-1].split(">", 1)[0]

    def delete(self) -> None:
        ip("link", "del", self.host_interface, check=False)
        ip("netns", "del", self.name, check=False)

    def exists(self) -> bool:
        return self.name in ip("netns", "list", check=False).stdout.split()

    def __enter__(self) -> Namespace:
        return self.create()

    def __exit__(self, *exc_info) -> None:
        self.delete()
