"""Blueprints: ``ui`` (pages), ``api`` (JSON API /api/v1), ``sync_api`` (/sync/api)."""
