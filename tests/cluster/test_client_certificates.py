"""Certificate-based instance authentication, for real: the shipped nginx
example (deploy/nginx/monitor.conf) runs on loopback with TLS in front of a
primary's web and sync ports and verifies client certificates on the sync
port. A dependent with SYNC_CLIENT_CERT and SYNC_CLIENT_KEY registers and
sends heartbeats through it; one without a certificate is refused by nginx
and never reaches the primary, join secret or not."""
from __future__ import annotations

import time

import pytest
import requests

from tests.peers.cluster import make_instance
from tests.peers.nginx import EXAMPLE_PORTS, Nginx, make_certificates, nginx_binary, render_example
from tests.peers.ports import reserve_port
from tests.peers.process import wait_until

pytestmark = pytest.mark.skipif(nginx_binary() is None,
                                reason="nginx is not installed (Debian: apt-get install nginx-light)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    pki = make_certificates(root / "tls")
    listen = {port: reserve_port() for port in EXAMPLE_PORTS}
    web_url, sync_url = f"https://127.0.0.1:{listen[443]}", f"https://127.0.0.1:{listen[8443]}"
    primary = make_instance(root, "primary", ENABLE_SYNC_API="true", PUBLIC_SYNC_URL=sync_url, TRUSTED_PROXIES=1)
    proxy = Nginx(root / "nginx", render_example(
        pki.folder, listen, {3001: int(primary.env["PORT"]), 3002: int(primary.env["SYNC_API_PORT"])}))
    # Neither dependent may suspect the primary during the test: this is
    # about being let in, not about failover.
    with_cert = make_instance(root, "with-cert", PRIMARY_SYNC_URL=sync_url, FAILOVER_MAX_FAILURES=100,
                              SYNC_CLIENT_CERT=pki.client_cert, SYNC_CLIENT_KEY=pki.client_key,
                              SYNC_CA_BUNDLE=pki.ca)
    without_cert = make_instance(root, "without-cert", PRIMARY_SYNC_URL=sync_url, FAILOVER_MAX_FAILURES=100,
                                 SYNC_CA_BUNDLE=pki.ca)
    instances = [primary, with_cert, without_cert]
    try:
        primary.start()
        proxy.start(listen[8443])
        with_cert.start()
        without_cert.start()
        yield {"pki": pki, "web": web_url, "sync": sync_url, "proxy": proxy,
               "primary": primary, "with-cert": with_cert, "without-cert": without_cert}
    finally:
        for instance in instances:
            instance.terminate()
        proxy.stop()
        for instance in instances:
            instance.stop()


def registered(primary) -> dict[str, object]:
    return dict(primary.query("SELECT name, last_heartbeat_at FROM monitoring_instances WHERE role = 'dependent'"))


def config_value(instance, key: str) -> str | None:
    rows = instance.query("SELECT value FROM instance_config WHERE key = ?", (key,))
    return rows[0][0] if rows else None


def test_nginx_lets_only_certified_instances_reach_the_sync_api(cluster):
    pki, sync = cluster["pki"], cluster["sync"]
    ok = requests.get(f"{sync}/sync/api/healthz", verify=pki.ca, cert=(pki.client_cert, pki.client_key), timeout=10)
    assert ok.status_code == 200 and ok.json() == {"status": "ok"}
    missing = requests.get(f"{sync}/sync/api/healthz", verify=pki.ca, timeout=10)
    assert missing.status_code == 400 and "No required SSL certificate" in missing.text
    stranger = requests.get(f"{sync}/sync/api/healthz", verify=pki.ca,
                            cert=(pki.stranger_cert, pki.stranger_key), timeout=10)
    assert stranger.status_code == 400 and "certificate error" in stranger.text.lower()
    # The web port needs no client certificate, and answers over TLS.
    assert requests.get(f"{cluster['web']}/healthz", verify=pki.ca, timeout=10).json() == {"status": "ok"}


def test_a_dependent_with_a_certificate_registers_and_sends_heartbeats(cluster):
    primary, dependent = cluster["primary"], cluster["with-cert"]
    wait_until(lambda: "with-cert" in registered(primary), 90,
               lambda: f"the dependent with a certificate did not register; log:\n{dependent.tail()}")
    first = wait_until(lambda: registered(primary)["with-cert"], 30, "no heartbeat from the dependent")
    wait_until(lambda: registered(primary)["with-cert"] != first, 30,
               lambda: f"its heartbeats stopped after the first; log:\n{dependent.tail()}")
    assert config_value(dependent, "sync_token")
    # Through nginx: the primary's access log (X-Forwarded-For trusted) and nginx's both saw it.
    assert "PUT /sync/api/heartbeat" in (cluster["proxy"].prefix / "access.log").read_text()


def test_a_dependent_without_a_certificate_is_refused(cluster):
    primary, dependent = cluster["primary"], cluster["without-cert"]
    error = wait_until(lambda: config_value(dependent, "last_sync_error"), 60,
                       lambda: f"the dependent without a certificate recorded no sync error; log:\n{dependent.tail()}")
    assert "400" in error and "No required SSL certificate" in error
    # Given the same time the other needed to register and beat, it never got in.
    wait_until(lambda: "with-cert" in registered(primary), 90, "the certified dependent never registered")
    time.sleep(3)
    assert "without-cert" not in registered(primary)
    assert config_value(dependent, "sync_token") is None
