"""RQ jobs, one module per kind of work. Each job takes ids or primitives,
builds its own app context (via ``app()``), and is safe to run twice."""
from __future__ import annotations

_app = None


def app():
    """The app for jobs, made once per worker process and reused."""
    global _app
    if _app is None:
        from app import create_app

        _app = create_app(serve="none", migrations=False)
    return _app
