"""WSGI entry points for gunicorn: ``wsgi:app`` (UI and JSON API on PORT),
``wsgi:sync_app`` (the sync API on SYNC_API_PORT), and ``wsgi:both`` (one
server listening on both ports, as ``python -m app start`` runs it)."""
from app import create_app
from app.port_dispatch import PortDispatcher

app = create_app(serve="web", migrations=False)
sync_app = create_app(serve="sync", migrations=False)
_settings = app.config["SETTINGS"]
both = PortDispatcher({_settings.port: app, _settings.sync_api_port: sync_app})
