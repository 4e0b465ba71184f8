"""A dependent against a real primary's sync API served over TLS on loopback
with client certificates required (Python's ssl, CERT_REQUIRED, in front of
the real sync app): with SYNC_CLIENT_CERT and SYNC_CLIENT_KEY it registers
and sends heartbeats; without, the handshake is refused and nothing reaches
the primary. The failover probes go through the same session."""
from __future__ import annotations

import ssl
import threading

import pytest
import trustme
from sqlalchemy import select
from werkzeug.serving import make_server

from app.extensions import db
from app.models import MonitoringInstance
from app.services import failover
from app.services.sync import dependent
from tests.conftest import SECRET, instance_app


@pytest.fixture
def pki(tmp_path):
    ca, stranger = trustme.CA(), trustme.CA()
    folder = tmp_path / "tls"
    folder.mkdir()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    files = {"ca": folder / "ca.pem", "ca_object": ca}
    for name, issuer in (("client", ca), ("stranger", stranger)):
        issued = issuer.issue_cert(f"{name}.instances.example.org")
        issued.cert_chain_pems[0].write_to_path(str(folder / f"{name}.crt"))
        issued.private_key_pem.write_to_path(str(folder / f"{name}.key"))
        files[name] = (folder / f"{name}.crt", folder / f"{name}.key")
    return files


@pytest.fixture
def tls_primary_url(primary_app, pki):
    """The primary's sync app over TLS on loopback, client certificates required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki["ca_object"].issue_cert("127.0.0.1").configure_cert(context)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(pki["ca"]))
    server = make_server("127.0.0.1", 0, primary_app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_port}"
    server.shutdown()


def dependent_app(tmp_path, template, url, name, **tls):
    return instance_app(tmp_path / name, template, {
        "PRIMARY_SYNC_URL": url, "SYNC_SHARED_SECRET": SECRET, "INSTANCE_NAME": name,
        "INSTANCE_LOCATION": name, **{k: str(v) for k, v in tls.items()}}, serve="none")


def registered(primary_app) -> dict:
    with primary_app.app_context():
        rows = db.session.execute(select(MonitoringInstance.name, MonitoringInstance.last_heartbeat_at)
                                  .where(MonitoringInstance.role == "dependent")).all()
        db.session.remove()
    return dict(rows)


def test_a_dependent_with_a_client_certificate_registers_and_beats(
        tmp_path, migrated_sqlite_template, primary_app, tls_primary_url, pki, monkeypatch):
    # The environment's CA bundle (set on many machines) must not win over SYNC_CA_BUNDLE.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ssl.get_default_verify_paths().openssl_cafile)
    app = dependent_app(tmp_path, migrated_sqlite_template, tls_primary_url, "certified",
                        SYNC_CLIENT_CERT=pki["client"][0], SYNC_CLIENT_KEY=pki["client"][1],
                        SYNC_CA_BUNDLE=pki["ca"])
    with app.app_context():
        dependent.sync_once()
        first = registered(primary_app)["certified"]
        assert first is not None
        dependent.sync_once()
        assert registered(primary_app)["certified"] >= first
        # The failover probe reaches the primary through the same session.
        seen = failover.peer_status("", tls_primary_url, timeout=5)
        assert seen.reachable and seen.role == "primary"
        db.session.remove()


@pytest.mark.parametrize("tls", [
    lambda pki: {"SYNC_CA_BUNDLE": pki["ca"]},
    lambda pki: {"SYNC_CLIENT_CERT": pki["stranger"][0], "SYNC_CLIENT_KEY": pki["stranger"][1],
                 "SYNC_CA_BUNDLE": pki["ca"]},
], ids=["no-certificate", "certificate-of-another-ca"])
def test_a_dependent_without_a_trusted_certificate_is_refused(
        tmp_path, migrated_sqlite_template, primary_app, tls_primary_url, pki, tls):
    app = dependent_app(tmp_path, migrated_sqlite_template, tls_primary_url, "stranger", **tls(pki))
    with app.app_context():
        with pytest.raises(dependent.PrimaryUnavailable, match="unreachable"):
            dependent.sync_once()
        assert not failover.peer_status("", tls_primary_url, timeout=5).reachable
        db.session.remove()
    assert "stranger" not in registered(primary_app)
