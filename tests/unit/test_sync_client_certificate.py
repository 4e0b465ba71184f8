"""SYNC_CLIENT_CERT, SYNC_CLIENT_KEY and SYNC_CA_BUNDLE: checked at start with
the variable named, and carried by every session that talks to a sync API."""
import pytest
import trustme

from app.config import ConfigError, load_settings
from app.services.sync.peer_session import new_session

DEPENDENT = {"PRIMARY_SYNC_URL": "https://primary.example.org", "SYNC_SHARED_SECRET": "s" * 16}


@pytest.fixture
def pki(tmp_path):
    ca = trustme.CA()
    client = ca.issue_cert("dependent.example.org")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "client.pem", "key": tmp_path / "client.key",
             "both": tmp_path / "client-and-key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(files["both"]))
    files["other_key"] = tmp_path / "other.key"
    ca.issue_cert("other.example.org").private_key_pem.write_to_path(str(files["other_key"]))
    return files


def test_it_carries_the_certificate_key_and_ca_into_the_peer_session(pki):
    settings = load_settings({**DEPENDENT, "SYNC_CLIENT_CERT": str(pki["cert"]),
                              "SYNC_CLIENT_KEY": str(pki["key"]), "SYNC_CA_BUNDLE": str(pki["ca"])})
    session = new_session(settings)
    assert session.cert == (str(pki["cert"]), str(pki["key"]))
    assert session.verify == str(pki["ca"])


def test_it_takes_one_file_holding_certificate_and_key(pki):
    session = new_session(load_settings({**DEPENDENT, "SYNC_CLIENT_CERT": str(pki["both"])}))
    assert session.cert == str(pki["both"])
    assert session.verify is True


def test_it_leaves_the_session_plain_when_unset():
    session = new_session(load_settings(DEPENDENT))
    assert session.cert is None and session.verify is True


@pytest.mark.parametrize("env, message", [
    (lambda p: {"SYNC_CLIENT_CERT": "/nonexistent/client.pem"}, "SYNC_CLIENT_CERT cannot be read"),
    (lambda p: {"SYNC_CLIENT_CERT": str(p["cert"].parent)}, "SYNC_CLIENT_CERT must be a file"),
    (lambda p: {"SYNC_CLIENT_KEY": str(p["key"])}, "SYNC_CLIENT_KEY is set but SYNC_CLIENT_CERT is not"),
    (lambda p: {"SYNC_CLIENT_CERT": str(p["cert"]), "SYNC_CLIENT_KEY": str(p["other_key"])},
     "SYNC_CLIENT_KEY '.*other.key' is not the private key of the certificate in SYNC_CLIENT_CERT"),
    (lambda p: {"SYNC_CLIENT_CERT": str(p["cert"])},
     r"SYNC_CLIENT_CERT '.*client.pem' must hold a PEM certificate and its private key \(or set SYNC_CLIENT_KEY"),
    (lambda p: {"SYNC_CLIENT_CERT": str(p["key"]), "SYNC_CLIENT_KEY": str(p["key"])},
     "SYNC_CLIENT_CERT '.*client.key' and SYNC_CLIENT_KEY '.*client.key' must be a PEM certificate and its PEM private key: OpenSSL could not read them"),
    (lambda p: {"SYNC_CA_BUNDLE": str(p["key"])}, "SYNC_CA_BUNDLE must hold PEM CA certificates"),
    (lambda p: {"SYNC_CA_BUNDLE": "/nonexistent/ca.pem"}, "SYNC_CA_BUNDLE cannot be read"),
])
def test_it_names_the_bad_variable(pki, env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings({**DEPENDENT, **env(pki)})


def test_it_refuses_an_encrypted_key(pki, tmp_path):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki["key"].read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"passphrase")))
    with pytest.raises(ConfigError, match="SYNC_CLIENT_KEY is encrypted"):
        load_settings({**DEPENDENT, "SYNC_CLIENT_CERT": str(pki["cert"]), "SYNC_CLIENT_KEY": str(encrypted)})
