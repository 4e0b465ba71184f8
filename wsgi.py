"""WSGI entry points for gunicorn: ``wsgi:app`` (UI and JSON API on PORT) and
``wsgi:sync_app`` (the sync API on SYNC_API_PORT)."""
from app import create_app

app = create_app(serve="web")
sync_app = create_app(serve="sync")
