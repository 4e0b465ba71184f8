"""JSON errors for the APIs: ``{"error": code, "message": text}``."""
import json

from flask import jsonify, request
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

# PostgreSQL's "numeric value out of range" and "datetime field overflow":
# what SQLite's driver raises as OverflowError.
OUT_OF_RANGE_SQLSTATES = {"22003", "22008"}


def wants_json() -> bool:
    return request.path.startswith(("/api/", "/sync/api")) or request.accept_mimetypes.best == "application/json"


def json_error(status: int, code: str, message: str, **extra):
    body = {"error": code, "message": message}
    body.update(extra)
    return jsonify(body), status


class _RefusedConstant(ValueError):
    pass


def _refuse_constant(name):
    raise _RefusedConstant(f"{name} is not a number JSON allows")


MAX_JSON_DEPTH = 32


def _problem_in(data) -> str | None:
    """What is wrong inside parsed JSON: too deep, or a NUL character.

    Iterative, so a hostile body cannot exhaust the interpreter's stack.
    """
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return "contains a NUL character"
        elif isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"is nested more than {MAX_JSON_DEPTH} levels deep"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and "\x00" in key:
                    return "contains a NUL character"
                stack.append((item, depth + 1))
    return None


def _refuse_if_cut_off(raw: bytes) -> None:
    """Raise the 413 for a body without Content-Length (chunked) that went
    past MAX_CONTENT_LENGTH.

    Werkzeug stops reading such a body at the limit and hands back what it
    read, cut off (which would parse as malformed JSON); it raises the 413
    only on a read past the limit. So one byte more is asked of the server's
    stream: at the end of the body it gives nothing.
    """
    limit = request.max_content_length
    if limit is None or request.content_length is not None or len(raw) < limit:
        return
    if request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()


def json_body():
    """The request's JSON object, or (None, an error response).

    A body sent as anything but ``application/json`` is a 415: a browser
    sends ``text/plain`` or form bodies cross-site without asking first, and
    with basic-auth credentials it has cached, such a post would act as the
    user. Malformed, non-object and absurdly nested bodies, NaN and Infinity
    (not JSON, though Python reads them) and NUL characters (which
    PostgreSQL refuses) are all a 400; an oversized body is a 413 before
    parsing, whether it announced its length or came in chunks.
    """
    raw = request.get_data(cache=True)
    _refuse_if_cut_off(raw)
    if raw and request.mimetype != "application/json":
        sent = f"it was {request.content_type!r}" if request.content_type else "none was sent"
        return None, json_error(415, "unsupported_media_type",
                                f"the body must be sent with 'Content-Type: application/json' ({sent})",
                                fields={"Content-Type": "must be application/json"})
    try:
        data = json.loads(raw, parse_constant=_refuse_constant) if raw else None
    except _RefusedConstant as exc:
        return None, json_error(400, "invalid_json", str(exc), fields={"body": str(exc)})
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return None, json_error(400, "invalid_json", "the body must be a JSON object",
                                fields={"body": "must be a JSON object"})
    problem = _problem_in(data)
    if problem:
        return None, json_error(400, "invalid_json", f"the body {problem}", fields={"body": problem})
    return data, None


def register_error_handlers(app):
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if not wants_json():
            return exc
        code = (exc.name or "error").lower().replace(" ", "_")
        return json_error(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(OverflowError)
    def _out_of_range(exc: OverflowError):
        # A number or date too large for the database (an id of 30 digits,
        # the year 9999 in another zone): the request is wrong, not the server.
        from app.extensions import db

        db.session.rollback()
        message = "a number or date in the request is out of range"
        if wants_json():
            return json_error(400, "out_of_range", message)
        return message, 400

    @app.errorhandler(DataError)
    def _out_of_range_for_postgresql(exc: DataError):
        # An id past an INTEGER column's range reaches PostgreSQL, which
        # refuses it; the same request on SQLite is an OverflowError.
        if getattr(exc.orig, "sqlstate", None) in OUT_OF_RANGE_SQLSTATES:
            return _out_of_range(OverflowError(str(exc.orig)))
        raise exc
