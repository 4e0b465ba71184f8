"""One WSGI server for both surfaces: each request goes to the app of the
port it came in on.

``python -m app start`` runs a single gunicorn that listens on ``PORT`` and
``SYNC_API_PORT`` (one server's processes instead of two). The port is the
listening socket's (gunicorn's ``SERVER_PORT``), never the Host header, so
a client cannot reach the web UI through the sync API's port or the other
way round; each app still applies ``TRUSTED_PROXIES`` itself.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable


class PortDispatcher:
    """A WSGI app that hands each request to the app serving its port."""

    def __init__(self, apps: dict[int, Callable]):
        self.apps = {str(port): app for port, app in apps.items()}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        app = self.apps.get(environ.get("SERVER_PORT", ""))
        if app is None:
            body = f"nothing is served on port {environ.get('SERVER_PORT')}\n".encode()
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        return app(environ, start_response)
