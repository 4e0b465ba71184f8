"""A real HTTP webhook receiver on loopback that answers as told."""
from __future__ import annotations

import json
import threading
from collections import deque

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


class WebhookReceiver:
    """Records every request; answers with the queued statuses, then ``default_status``."""

    def __init__(self, default_status: int = 200):
        self.requests: list[dict] = []
        self.default_status = default_status
        self._statuses: deque[int] = deque()
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _app(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        with self._lock:
            status = self._statuses.popleft() if self._statuses else self.default_status
            self.requests.append({
                "path": request.full_path.rstrip("?"),
                "headers": dict(request.headers),
                "json": json.loads(body) if body else None,
                "answered": status,
            })
        return Response(f"status {status}", status=status)(environ, start_response)

    def answer(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, in order."""
        with self._lock:
            self._statuses.extend(statuses)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def payloads(self) -> list[dict]:
        with self._lock:
            return [r["json"] for r in self.requests]

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
