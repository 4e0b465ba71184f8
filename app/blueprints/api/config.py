"""The whole configuration as one document over HTTP: read it (YAML or JSON
by ``Accept``) and apply one (YAML or JSON by ``Content-Type``). Views are
thin: ``app.services.config_documents`` does the work. Administrators only,
and at most ``CONFIG_REQUESTS_PER_MINUTE`` a minute each: an import of
thousands of endpoints is heavy."""
import json

from flask import current_app, jsonify, request

from app.blueprints.api import bp
from app.blueprints.api.views import _refuse_change
from app.blueprints.errors import _refuse_if_cut_off, json_error
from app.extensions import api_auth
from app.services import config_documents
from app.services.rate_limits import SlidingWindowLimit

CONFIG_REQUESTS_PER_MINUTE = 10
# A document of 10,000 endpoints is about 4 MiB of YAML; the other routes
# keep the app's 1 MiB.
DEFAULT_MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
_YAML_ANSWER = "application/yaml"


def _limit() -> SlidingWindowLimit:
    # One per app, so each app (and each test's app) counts on its own.
    return current_app.extensions.setdefault("monitor_config_document_limit",
                                             SlidingWindowLimit(CONFIG_REQUESTS_PER_MINUTE, 60))


def _admin_within_limit():
    """Refuse a viewer (403) or a user over the limit (429); None: go on."""
    user = api_auth.current_user()
    if user is None or not user.is_admin:
        return json_error(403, "forbidden", "only an administrator can read or apply the configuration document")
    wait = _limit().take(user.id)
    if wait is not None:
        response, status = json_error(429, "too_many_requests",
                                      f"at most {CONFIG_REQUESTS_PER_MINUTE} configuration requests a minute; "
                                      f"try again in {wait} s")
        response.headers["Retry-After"] = str(wait)
        return response, status
    return None


def _flag(name: str) -> tuple[bool, dict | None]:
    """A true/false query parameter (absent: false), or the fields of its error.
    Exactly ``true`` or ``false``, as the description says."""
    value = request.args.get(name, "false")
    if value not in ("true", "false"):
        return False, {name: "must be true or false"}
    return value == "true", None


@bp.get("/config")
def export_config():
    """The configuration document; secrets masked unless ``withSecrets=true``."""
    refused = _admin_within_limit()
    if refused:
        return refused
    with_secrets, problem = _flag("withSecrets")
    if problem:
        return json_error(400, "validation_error", "withSecrets must be true or false", fields=problem)
    document = config_documents.export_document(with_secrets=with_secrets)
    wanted = request.accept_mimetypes.best_match(["application/json", *sorted(config_documents.YAML_MEDIA_TYPES)])
    if wanted in config_documents.YAML_MEDIA_TYPES:
        text = config_documents.to_yaml(document, header=config_documents.export_header(with_secrets=with_secrets))
        return current_app.response_class(text, mimetype=_YAML_ANSWER)
    # In the document's own order (version first), not sorted as other answers are.
    return current_app.response_class(json.dumps(document, indent=2, ensure_ascii=False) + "\n",
                                      mimetype="application/json")


@bp.post("/config")
def import_config():
    """Apply a document (``dryRun=true``: only say what it would change;
    ``prune=true``: remove what it does not name)."""
    refused = _admin_within_limit() or _refuse_change()
    if refused:
        return refused
    flags = {}
    for name in ("dryRun", "prune"):
        flags[name], problem = _flag(name)
        if problem:
            return json_error(400, "validation_error", f"{name} must be true or false", fields=problem)
    media_type = request.mimetype
    if media_type != config_documents.JSON_MEDIA_TYPE and media_type not in config_documents.YAML_MEDIA_TYPES:
        return json_error(415, "unsupported_media_type",
                          "send the document as application/yaml or application/json",
                          fields={"Content-Type": "must be application/yaml or application/json"})
    request.max_content_length = current_app.config.get("CONFIG_DOCUMENT_MAX_BYTES", DEFAULT_MAX_DOCUMENT_BYTES)
    raw = request.get_data(cache=False)
    _refuse_if_cut_off(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return json_error(400, "invalid_document", "the document must be UTF-8 text",
                          fields={"body": "must be UTF-8 text"})
    try:
        parsed = config_documents.parse(text, media_type)
        outcome = config_documents.import_document(parsed, prune=flags["prune"], dry_run=flags["dryRun"])
    except config_documents.ImportRefused as exc:
        return json_error(409, "read_only", str(exc))
    except config_documents.InvalidDocument as exc:
        lines = exc.describe()
        return json_error(400, "validation_error", f"nothing was applied: {lines[0]}"
                          + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""),
                          problems=[problem.to_dict() for problem in exc.problems], more=exc.more)
    return jsonify(outcome.to_dict())
