"""The HTTP session every sync request to another member goes through.

A dependent's rounds with the primary and the failover probes between
members (status, elect, hand over) all reach a sync API, which may sit
behind a TLS proxy that verifies client certificates (nginx's
``ssl_verify_client``): each of them takes its session from here, so the
client certificate and the trusted CAs are set in one place.
"""
from __future__ import annotations

import requests

from app.config import Settings


class PeerSession(requests.Session):
    """A session whose CA bundle, when one is set, wins over the
    environment's: requests otherwise prefers REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE to a session's own ``verify``, and the primary's
    certificate would be checked against the system's CAs instead."""

    ca_bundle: str | None = None

    def request(self, method, url, **kwargs):
        if self.ca_bundle is not None and kwargs.get("verify") is None:
            kwargs["verify"] = self.ca_bundle
        return super().request(method, url, **kwargs)


def new_session(settings: Settings) -> requests.Session:
    """A session presenting SYNC_CLIENT_CERT (with SYNC_CLIENT_KEY) and
    trusting SYNC_CA_BUNDLE, when they are set."""
    session = PeerSession()
    if settings.sync_client_cert is not None:
        session.cert = (str(settings.sync_client_cert) if settings.sync_client_key is None
                        else (str(settings.sync_client_cert), str(settings.sync_client_key)))
    if settings.sync_ca_bundle is not None:
        session.verify = session.ca_bundle = str(settings.sync_ca_bundle)
    return session
