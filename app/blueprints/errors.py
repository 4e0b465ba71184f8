"""JSON errors for the APIs: ``{"error": code, "message": text}``."""
from flask import jsonify, request
from werkzeug.exceptions import HTTPException


def wants_json() -> bool:
    return request.path.startswith(("/api/", "/sync/api")) or request.accept_mimetypes.best == "application/json"


def json_error(status: int, code: str, message: str, **extra):
    body = {"error": code, "message": message}
    body.update(extra)
    return jsonify(body), status


def register_error_handlers(app):
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if not wants_json():
            return exc
        code = (exc.name or "error").lower().replace(" ", "_")
        return json_error(exc.code or 500, code, exc.description or exc.name)
