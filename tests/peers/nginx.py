"""nginx on loopback, running the example configuration in
``deploy/nginx/monitor.conf`` with its certificate paths, listen ports and
upstreams swapped for a test's own, so the file checked is the file shipped.

Skipped where nginx is not installed (Debian: ``apt-get install nginx-light``).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.conftest import ROOT

EXAMPLE = ROOT / "deploy" / "nginx" / "monitor.conf"
# The example's own listen ports, and its upstreams' (the monitor's defaults).
EXAMPLE_PORTS = (80, 443, 8443)
EXAMPLE_UPSTREAMS = (3001, 3002)
# The certificate files the example names, under /etc/nginx/tls/.
SERVER_CERT, SERVER_KEY, CLIENT_CA = "monitor.example.org.crt", "monitor.example.org.key", "instances-ca.pem"


@dataclass
class Certificates:
    """A test PKI in ``folder``: the server's certificate (for 127.0.0.1)
    under the names the example uses, the CA that signs instances' client
    certificates, one signed client and one from a CA nginx does not trust."""

    folder: Path
    ca: Path  # trusted for the server's certificate, and the instances' CA
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def make_certificates(folder: Path) -> Certificates:
    """Write a CA, a server certificate for 127.0.0.1 and client certificates."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, stranger_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(folder / SERVER_CERT))
    server.private_key_pem.write_to_path(str(folder / SERVER_KEY))
    ca.cert_pem.write_to_path(str(folder / CLIENT_CA))
    files = {}
    for name, issuer in (("client", ca), ("stranger", stranger_ca)):
        issued = issuer.issue_cert(f"{name}.instances.example.org")
        issued.cert_chain_pems[0].write_to_path(str(folder / f"{name}.crt"))
        issued.private_key_pem.write_to_path(str(folder / f"{name}.key"))
        files[name] = (folder / f"{name}.crt", folder / f"{name}.key")
    return Certificates(folder, folder / CLIENT_CA, *files["client"], *files["stranger"])


def nginx_binary() -> str | None:
    """nginx's path, or None when it is not installed."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def render_example(tls_dir: Path, listen: dict[int, int], upstreams: dict[int, int]) -> str:
    """The example with its files in ``tls_dir``, each listen port ``p``
    on 127.0.0.1:``listen[p]`` (IPv6 listeners dropped) and each upstream
    port ``u`` at 127.0.0.1:``upstreams[u]``."""
    text = EXAMPLE.read_text().replace("/etc/nginx/tls/", f"{tls_dir}/")

    def listener(match: re.Match) -> str:
        if match.group("v6"):
            return ""
        return f"listen 127.0.0.1:{listen[int(match.group('port'))]}{match.group('rest')};"

    text = re.sub(r"listen (?P<v6>\[::\]:)?(?P<port>\d+)(?P<rest>[^;]*);", listener, text)
    return re.sub(r"server 127\.0\.0\.1:(\d+);", lambda m: f"server 127.0.0.1:{upstreams[int(m.group(1))]};", text)


def main_config(prefix: Path, included: Path) -> str:
    """A whole nginx.conf that includes ``included`` in its http block, with
    every file nginx writes under ``prefix``."""
    temp = "\n".join(f"    {kind}_temp_path {prefix}/{kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
            f"events {{ worker_connections 64; }}\n"
            f"http {{\n    access_log {prefix}/access.log;\n{temp}\n    include {included};\n}}\n")


class Nginx:
    """One nginx master on loopback, its files under ``prefix``."""

    def __init__(self, prefix: Path, site: str):
        self.prefix = prefix
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "monitor.conf").write_text(site)
        self.config = prefix / "nginx.conf"
        self.config.write_text(main_config(prefix, prefix / "monitor.conf"))
        self.process: subprocess.Popen | None = None

    def test_config(self) -> subprocess.CompletedProcess:
        """``nginx -t`` on the configuration."""
        return subprocess.run([nginx_binary(), "-t", "-p", str(self.prefix), "-c", str(self.config)],
                              capture_output=True, text=True, timeout=30)

    def start(self, port: int, timeout: float = 20.0) -> Nginx:
        """Start nginx and wait until it accepts connections on ``port``."""
        self.process = subprocess.Popen([nginx_binary(), "-p", str(self.prefix), "-c", str(self.config)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=open(self.prefix / "stderr.log", "w"), start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited with {self.process.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"nginx did not listen on port {port}:\n{self.log()}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the master (and with it its worker) and wait."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)

    def log(self) -> str:
        return "\n".join(path.read_text(errors="replace")[-3000:] for path in
                         (self.prefix / "stderr.log", self.prefix / "error.log") if path.exists())
