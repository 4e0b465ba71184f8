"""A real DNS server for name-lookup tests, in a network namespace of the test's own.

The system resolver (glibc's ``getaddrinfo``) reads ``/etc/resolv.conf`` and
asks port 53: a test cannot point it at a server of its own in the test
process's network. ``ip netns exec`` can: it runs a command in a namespace
and mounts ``/etc/netns/<name>/*`` over ``/etc/*`` for it. So lookup tests
run in a pytest of their own inside a namespace whose resolver asks
127.0.0.1, where ``DnsServer`` answers (or, for a name told to hang,
stays silent). Nothing is ever forwarded: names the server was not told
about do not exist.
"""
from __future__ import annotations

import os
import shutil
import socketserver
import subprocess
import threading
from pathlib import Path

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

# Ask again every 3 s, 10 times: a name that hangs keeps a lookup busy for
# up to 30 s, unless the server is told to stop hanging (``release``). No
# test waits long enough to see a second attempt.
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:3 attempts:10\n"
# Files, then DNS: nothing else the host might have configured (mDNS,
# systemd-resolved over D-Bus) may take a lookup off this namespace.
NSSWITCH_CONF = "hosts: files dns\n"
HOSTS = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
INSIDE = "MONITOR_TEST_DNS_NAMESPACE"


class DnsServer:
    """Answers A queries for the names it is given; ``asked`` lists the
    name of every A query received (one per ``getaddrinfo`` attempt)."""

    def __init__(self, address: str = "127.0.0.1", port: int = 53) -> None:
        self._answers: dict[str, list[str]] = {}
        self._hanging: set[str] = set()
        self._released = threading.Event()
        self.asked: list[str] = []
        # Queries left unanswered, answered with SERVFAIL on ``release``.
        self._pending: list[tuple[bytes, object, tuple]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server._reply(data, sock, self.client_address)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        self._server = socketserver.ThreadingUDPServer((address, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def answer(self, host: str, addresses: list[str]) -> None:
        """A queries for ``host`` get these IPv4 addresses, in this order."""
        self._answers[host] = addresses

    def hang(self, host: str) -> None:
        """Queries for ``host`` get no answer until ``release``, then SERVFAIL."""
        self._hanging.add(host)

    def unknown(self, host: str) -> None:
        """``host`` does not exist (NXDOMAIN), as every name not given does."""
        self._answers.pop(host, None)
        self._hanging.discard(host)

    def release(self) -> None:
        """Stop hanging: waiting lookups get SERVFAIL now, later ones at once."""
        with self._lock:
            self._released.set()
            pending, self._pending = self._pending, []
        for reply, sock, address in pending:
            sock.sendto(reply, address)

    def _reply(self, data: bytes, sock, address) -> bytes | None:
        try:
            query = DNSRecord.parse(data)
        except Exception:  # not DNS: nothing to answer
            return None
        name = str(query.q.qname).rstrip(".")
        if query.q.qtype == QTYPE.A:
            self.asked.append(name)
        reply = query.reply()
        if name in self._hanging:
            reply.header.rcode = RCODE.SERVFAIL
            with self._lock:
                if not self._released.is_set():
                    self._pending.append((reply.pack(), sock, address))
                    return None
        elif name in self._answers:
            if query.q.qtype == QTYPE.A:
                for address in self._answers[name]:
                    reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(address), ttl=0))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply.pack()

    def __enter__(self) -> DnsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


class DnsNamespace:
    """A network namespace with only loopback, whose resolver asks 127.0.0.1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.etc = Path("/etc/netns") / name

    def __enter__(self) -> DnsNamespace:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True, text=True)
        try:
            self.etc.mkdir(parents=True, exist_ok=True)
            (self.etc / "resolv.conf").write_text(RESOLV_CONF)
            (self.etc / "nsswitch.conf").write_text(NSSWITCH_CONF)
            (self.etc / "hosts").write_text(HOSTS)
            subprocess.run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"],
                           check=True, capture_output=True, text=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def run(self, command: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
        """``command`` inside the namespace, with ``INSIDE`` set in its environment."""
        env = {**os.environ, INSIDE: "1"}
        return subprocess.run(["ip", "netns", "exec", self.name, *command], env=env, timeout=timeout,
                              capture_output=True, text=True, **kwargs)

    def __exit__(self, *exc_info) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        shutil.rmtree(self.etc, ignore_errors=True)


def inside_namespace() -> bool:
    return os.environ.get(INSIDE) == "1"
