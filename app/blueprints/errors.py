"""Errors: JSON for the APIs (``{"error": code, "message": text}``), a page
of the site for people (the site's layout and navigation, what went wrong,
a way back), a fragment for HTMX requests."""
import json
import logging

from flask import current_app, jsonify, make_response, render_template, request
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

logger = logging.getLogger(__name__)

# PostgreSQL's "numeric value out of range" and "datetime field overflow":
# what SQLite's driver raises as OverflowError.
OUT_OF_RANGE_SQLSTATES = {"22003", "22008"}

# What a person is told; werkzeug's names and descriptions are written for
# developers.
PAGE_TITLES = {404: "Page not found", 405: "Not allowed here", 500: "Server error"}
PAGE_MESSAGES = {
    404: "There is nothing at this address. It may have been removed, or the link may be mistyped.",
    405: "This address does not take that kind of request.",
    500: "Something went wrong on the server while answering this request. It has been logged; "
         "try again in a moment.",
}


def wants_json() -> bool:
    """Whether an error for this request is answered as JSON: the APIs, a
    client that asks for JSON, and any surface without pages (the sync API)."""
    return (request.path.startswith(("/api/", "/sync/api"))
            or request.accept_mimetypes.best == "application/json"
            or "ui" not in current_app.blueprints)


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


def error_page(status: int, title: str, message: str, headers=()):
    """An error as a page of the site (with its navigation for a signed-in
    user), or as a message fragment for an HTMX request."""
    if request.headers.get("HX-Request"):
        body = render_template("partials/message.html", message=message, kind="error")
    else:
        body = render_template("errors/error.html", status=status, title=title, message=message,
                               **_signed_in_context(status))
    response = make_response(body, status)
    for name, value in headers:
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response


def _signed_in_context(status: int) -> dict:
    """The navigation's context. Pages of the ui and admin blueprints get it
    from their context processor; an address no route matched has no
    blueprint, so it is asked for here."""
    if request.blueprint in ("ui", "admin") or "admin" not in current_app.blueprints:
        return {}
    from app.blueprints.admin import signin

    try:
        return {"current_user": signin.current_user(), "read_only": signin.is_read_only()}
    except Exception:  # the database may be what failed: the page still shows
        if status < 500:
            raise
        logger.warning("no navigation on the error page: the signed-in user could not be read", exc_info=True)
        return {}


def register_error_handlers(app):
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        if wants_json():
            code = (exc.name or "error").lower().replace(" ", "_")
            response, status = json_error(status, code, exc.description or exc.name)
            # The exception's own headers: Allow on a 405, as RFC 9110 asks.
            for name, value in exc.get_headers():
                if name.lower() != "content-type":
                    response.headers[name] = value
            return response, status
        if status < 400:
            return exc
        if status >= 500:
            # Whatever failed may have left the transaction broken; the
            # page itself may need the database (the signed-in user).
            from app.extensions import db

            db.session.rollback()
        # A description given with abort() is this site's own words; the
        # default ones are werkzeug's, meant for developers.
        default = type(exc).description
        message = PAGE_MESSAGES.get(status) if exc.description == default or status >= 500 else exc.description
        return error_page(status, PAGE_TITLES.get(status, exc.name), message or exc.description or exc.name,
                          headers=exc.get_headers(request.environ))

    @app.errorhandler(OverflowError)
    def _out_of_range(exc: OverflowError):
        # A number or date too large for the database (an id of 30 digits,
        # the year 9999 in another zone): the request is wrong, not the server.
        from app.extensions import db

        db.session.rollback()
        message = "a number or date in the request is out of range"
        if wants_json():
            return json_error(400, "out_of_range", message)
        return error_page(400, "Bad Request", message[:1].upper() + message[1:] + ".")

    @app.errorhandler(DataError)
    def _out_of_range_for_postgresql(exc: DataError):
        # An id past an INTEGER column's range reaches PostgreSQL, which
        # refuses it; the same request on SQLite is an OverflowError.
        if getattr(exc.orig, "sqlstate", None) in OUT_OF_RANGE_SQLSTATES:
            return _out_of_range(OverflowError(str(exc.orig)))
        raise exc
