"""Configuration as code: the whole configuration as one document, and
applying one.

A configuration document (YAML, or JSON through the API) holds the
notification services, the endpoints, the published status pages and the
maintenance windows, each section a list of items in the JSON API's own
field names. Items are matched to what is stored by **name** (a maintenance
window by its title): names are what people write and read (alerts
and pages show an endpoint by name alone), they survive a move to another
group, and unlike ids they are the same in every database, so a file
exported from one instance applies to a fresh one. Endpoints name their
notification services, and maintenance windows their endpoints, by name
for the same reason. A name must therefore
pick one item: twice in a file, or shared by two stored rows, is an error.

Applying a document (``import_document``) validates every item through the
services that validate the UI's and the API's input (``endpoints``,
``notifications``, ``status_pages``), changes only what differs, and does it
all in one transaction: every problem is reported, each with the line of the
file it comes from, and nothing is applied. A dry run does the same work and
rolls it back. Applying the same document twice changes nothing the second
time, so ``config_version`` moves only when something changed (once).

Secrets are exported only when asked; otherwise they appear as the masks the
API shows (``********`` in an endpoint, ``••••••`` in a service, and an
endpoint URL's credentials as ``********@``), which an import takes as "keep
the stored value" and refuses where nothing is stored.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Callable, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy import select

from app.checks import MASK, public_options, public_target
from app.collector_pause import collector_paused
from app.extensions import db
from app.models import Endpoint, MaintenanceWindow, NotificationService, utcnow
from app.notifiers import NOTIFIERS, SECRET_MASK
from app.services import configuration, endpoints, maintenance, notifications, status_pages
from app.services.input_errors import InvalidInput
from app.services.openapi import Answer, ErrorAnswer

logger = logging.getLogger(__name__)

DOCUMENT_VERSION = 1
# Media types a document may be sent as; anything else is not one.
YAML_MEDIA_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
JSON_MEDIA_TYPE = "application/json"
MAX_DEPTH = 32
# Past this many, the rest of the problems are counted, not listed.
MAX_PROBLEMS = 200

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_ABSENT = object()


# --- problems ------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document, where it is (line and column from 1,
    when known) and what to change."""

    message: str
    path: str = ""
    line: int | None = None
    column: int | None = None
    # The line where the item holding the problem starts.
    item_line: int | None = None

    def where(self, source: str = "") -> str:
        """``file:line:column`` (what is known of it); without a file, ``line L, column C``."""
        if not source:
            if self.line is None:
                return ""
            return f"line {self.line}" + (f", column {self.column}" if self.column is not None else "")
        parts = [source]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def describe(self, source: str = "") -> str:
        """The problem as one line of text, led by where it is."""
        where = self.where(source)
        return (f"{where}: " if where else "") + (f"{self.path} " if self.path else "") + self.message

    def to_dict(self) -> dict:
        """The problem as the API answers it."""
        return {"line": self.line, "column": self.column, "itemLine": self.item_line, "path": self.path,
                "message": self.message}


class InvalidDocument(InvalidInput):
    """A document that cannot be applied; nothing of it was. ``problems``
    lists every problem found, in the order of the file."""

    def __init__(self, problems: list[Problem], *, more: int = 0):
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.column or 0))
        self.more = more
        errors = {}
        for problem in self.problems:
            errors.setdefault(problem.path or "document", problem.message)
        super().__init__(errors)

    def describe(self, source: str = "") -> list[str]:
        """One line per problem, and one for those left out."""
        lines = [problem.describe(source) for problem in self.problems]
        if self.more:
            lines.append(f"... and {self.more} more problems")
        return lines


class ImportRefused(Exception):
    """This instance does not take configuration (a dependent, a fenced primary)."""


# --- reading a document -----------------------------------------------------------

@dataclass
class ParsedDocument:
    """A document's data and, for pointing at lines, its source."""

    data: Any
    text: str
    # The YAML node tree, whose marks give each item's line (None: not read yet).
    root: yaml.Node | None = None

    def mark(self, path: tuple) -> tuple[int, int] | None:
        """(line, column) of what ``path`` names, or of the nearest part of it
        that the document has; None when the source has no lines to give."""
        if self.root is None:
            try:
                self.root = yaml.compose(self.text, Loader=_Loader)
            except yaml.YAMLError:
                return None  # JSON that YAML reads otherwise: no lines
        node, mark = self.root, None
        if node is None:
            return None
        mark = node.start_mark
        for part in path:
            if isinstance(node, yaml.MappingNode):
                found = next(((k, v) for k, v in node.value if k.value == str(part)), None)
                if found is None:
                    break
                mark, node = found[0].start_mark, found[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                mark = node.start_mark
            else:
                break
        return mark.line + 1, mark.column + 1


@collector_paused()
def parse_yaml(text: str) -> ParsedDocument:
    """Read a YAML document (safe types only); a syntax error is an
    ``InvalidDocument`` with its line and column."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(part for part in (exc.context, exc.problem) if part) or "is not valid YAML"
        raise InvalidDocument([Problem(f"the document is not valid YAML: {message}",
                                       line=mark.line + 1 if mark else None,
                                       column=mark.column + 1 if mark else None)]) from None
    except yaml.YAMLError as exc:
        raise InvalidDocument([Problem(f"the document is not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    parsed = ParsedDocument(data, text, root)
    _check_shape(parsed)
    return parsed


@collector_paused()
def parse_json(text: str) -> ParsedDocument:
    """Read a JSON document; a syntax error is an ``InvalidDocument`` with its line and column."""
    def refuse(name):
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        data = json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise InvalidDocument([Problem(f"the document is not valid JSON: {exc.msg}", line=exc.lineno,
                                       column=exc.colno)]) from None
    except (ValueError, RecursionError) as exc:
        raise InvalidDocument([Problem(f"the document is not valid JSON: {exc}")]) from None
    parsed = ParsedDocument(data, text)
    _check_shape(parsed)
    return parsed


def parse(text: str, media_type: str) -> ParsedDocument:
    """Read a document sent as ``media_type`` (YAML or JSON)."""
    return parse_json(text) if media_type == JSON_MEDIA_TYPE else parse_yaml(text)


def _check_shape(parsed: ParsedDocument) -> None:
    """Refuse what no configuration holds and what could make a small file
    huge in memory: anchors reused as aliases (each use would expand
    again), nesting past ``MAX_DEPTH``, NUL characters (PostgreSQL refuses
    them). Iterative, so a hostile file cannot exhaust the stack."""
    seen: set[int] = set()
    stack = [(parsed.data, ())]
    while stack:
        value, path = stack.pop()
        problem = None
        if isinstance(value, str):
            problem = "holds a NUL character" if "\x00" in value else None
        elif isinstance(value, (dict, list)):
            if id(value) in seen:
                problem = "repeats an anchor through an alias; write the value out instead"
            elif len(path) >= MAX_DEPTH:
                problem = f"is nested more than {MAX_DEPTH} levels deep"
            else:
                seen.add(id(value))
                items = list(value.items() if isinstance(value, dict) else enumerate(value))
                # Reversed onto the stack: visited in the file's order, so a
                # repeat is reported where the alias is, not the anchor.
                for key, item in reversed(items):
                    if isinstance(key, str) and "\x00" in key:
                        problem = "holds a NUL character"
                        break
                    stack.append((item, path + (key,)))
        if problem:
            raise InvalidDocument([_located(parsed, path, problem)])


def _located(parsed: ParsedDocument, path: tuple, message: str, *, item_depth: int = 2) -> Problem:
    """A problem at ``path``, with the lines of it and of its item."""
    mark = parsed.mark(path)
    item_mark = parsed.mark(path[:item_depth]) if len(path) >= item_depth else mark
    return Problem(message, path=_path_text(path), line=mark[0] if mark else None,
                   column=mark[1] if mark else None, item_line=item_mark[0] if item_mark else None)


def _path_text(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# --- writing a document -----------------------------------------------------------

def export_document(*, with_secrets: bool = False) -> dict:
    """The whole configuration as a document (a dict), secrets masked unless
    ``with_secrets``."""
    document: dict[str, Any] = {"version": DOCUMENT_VERSION}
    for section in SECTIONS:
        document[section.name] = section.export(with_secrets)
    return document


def to_yaml(document: dict, *, header: str = "") -> str:
    """A document as YAML, in the order it was built, with ``header`` as a comment."""
    text = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=120)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + text


def export_header(*, with_secrets: bool) -> str:
    """What a written document says about itself."""
    state = configuration.snapshot()
    return (f"Configuration of instance {state.instance_id} ({state.role}), version {state.config_version},\n"
            f"exported {utcnow().isoformat(timespec='seconds')}. "
            + ("It holds secrets: keep it safe.\n" if with_secrets else
               f"Secrets are shown as {MASK} or {SECRET_MASK}: importing keeps the stored ones.\n")
            + "Apply it with: ./monitor config import FILE [--dry-run] [--prune]")


def _dropping_none(fields: dict) -> dict:
    # An absent field and a null one read the same; the file is shorter without.
    return {key: value for key, value in fields.items() if value is not None}


def _export_services(with_secrets: bool) -> list[dict]:
    out = []
    for service in notifications.list_services():
        config = dict(service.config or {})
        cls = NOTIFIERS.get(service.kind)
        if not with_secrets and cls is not None:
            config = cls.public_config(config)
        out.append({"name": service.name, "kind": service.kind, "config": config,
                    "isEnabled": service.is_enabled, "isDefault": service.is_default})
    return out


def _export_endpoints(with_secrets: bool) -> list[dict]:
    out = []
    for endpoint in endpoints.list_endpoints():
        fields = endpoints.configuration_fields(endpoint)
        if not with_secrets:
            fields["target"] = masked_target(endpoint.target)
            fields["options"] = public_options(fields["options"])
        fields["notificationServices"] = sorted(s.name for s in endpoint.notification_services)
        out.append(_dropping_none(fields))
    return out


def _export_status_pages(with_secrets: bool) -> list[dict]:
    return [{"group": group} for group in status_pages.published_groups()]


def masked_target(target: str) -> str:
    """The target with its URL credentials, if any, shown as ``********@``."""
    shown = public_target(target)
    if shown == target:
        return target
    parts = urlsplit(shown)
    return urlunsplit(parts._replace(netloc=f"{MASK}@{parts.netloc}"))


def _stored_target(target: Any, stored: Endpoint | None) -> tuple[Any, str | None]:
    """A target written as ``masked_target`` shows it back to the stored
    one (credentials and all); or the problem when there is none to keep."""
    marker = f"://{MASK}@"
    if not isinstance(target, str) or marker not in target:
        return target, None
    if stored is not None and masked_target(stored.target) == target:
        return stored.target, None
    return target, (f"has the credentials {MASK} but no stored endpoint of this name has any to keep; "
                    "write them out (export with --with-secrets)")


# --- the document and the outcome, described (OpenAPI) ---------------------------
# Items are the API's inputs, with names where the API takes ids (ids differ
# between databases). The import validates items through the services, not
# these models; they describe what it accepts and what an export writes.

class DocumentEndpoint(endpoints.EndpointInput):
    """An endpoint in a document: its notification services by name."""

    model_config = ConfigDict(title="DocumentEndpoint")

    notification_service_ids: SkipJsonSchema[None] = Field(default=None, exclude=True)
    # Absent: a new endpoint alerts through the default services, a stored one keeps its own.
    notification_services: list[str] | None = None


class DocumentMaintenanceWindow(maintenance.MaintenanceWindowInput):
    """A maintenance window in a document (matched by title): its endpoints by name."""

    model_config = ConfigDict(title="DocumentMaintenanceWindow", json_schema_extra={"examples": [
        {"title": "Weekly backup", "cronExpression": "0 2 * * 0", "timeZone": "Europe/Berlin",
         "durationMinutes": 120, "endpoints": ["web"], "groups": ["edge"]}]})

    endpoint_ids: SkipJsonSchema[list[int]] = Field(default_factory=list, exclude=True)
    endpoints: list[str] = Field(default_factory=list)


class DocumentStatusPage(BaseModel):
    """A published status page: the endpoint group it shows."""

    model_config = ConfigDict(extra="forbid")

    group: str = Field(min_length=1)


class ConfigDocument(BaseModel):
    """The whole configuration (``GET /api/v1/config``; ``POST`` applies one).
    A section left out is left as it is; ``null`` is an empty list."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              json_schema_extra={"examples": [{
                                  "version": DOCUMENT_VERSION,
                                  "notificationServices": [{"name": "hook", "kind": "webhook",
                                                            "config": {"url": "http://127.0.0.1:9/hook"}}],
                                  "endpoints": [
                                      {"name": "web", "checkType": "http", "target": "http://127.0.0.1:9/",
                                       "notificationServices": ["hook"]},
                                      {"name": "port", "checkType": "tcp", "target": "127.0.0.1", "port": 9,
                                       "group": "edge"}],
                                  "statusPages": [{"group": "edge"}],
                                  "maintenanceWindows": [{"title": "backup", "cronExpression": "0 2 * * 0",
                                                          "timeZone": "Europe/Berlin", "durationMinutes": 120,
                                                          "groups": ["edge"]}]}]})

    version: Literal[1] = DOCUMENT_VERSION
    notification_services: list[notifications.ServiceInput] | None = None
    endpoints: list[DocumentEndpoint] | None = None
    status_pages: list[DocumentStatusPage] | None = None
    maintenance_windows: list[DocumentMaintenanceWindow] | None = None


class ExportQuery(BaseModel):
    """The query of ``GET /api/v1/config``."""

    with_secrets: Literal["true", "false"] = Field(
        default="false", alias="withSecrets", description="`true`: secrets as stored, not masked")


class ImportQuery(BaseModel):
    """The query of ``POST /api/v1/config``."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    dry_run: Literal["true", "false"] = Field(default="false", description="`true`: say what would change, "
                                              "change nothing")
    prune: Literal["true", "false"] = Field(default="false", description="`true`: remove what the document's "
                                            "sections do not name")


class ChangedItem(Answer):
    """An item that changes, and the names of its fields that do (never their values)."""

    name: str
    fields: list[str]


class SectionChangesAnswer(Answer):
    """What an import changes in one section."""

    added: list[str]
    changed: list[ChangedItem]
    removed: list[str]
    unchanged: int


class ImportSections(Answer):
    """The changes of every section (one the document lacks changes nothing)."""

    notification_services: SectionChangesAnswer
    endpoints: SectionChangesAnswer
    status_pages: SectionChangesAnswer
    maintenance_windows: SectionChangesAnswer


class ImportOutcomeAnswer(Answer):
    """What ``ImportOutcome.to_dict`` answers."""

    dry_run: bool
    prune: bool
    applied: bool
    config_version: int
    sections: ImportSections


class ProblemAnswer(Answer):
    """One problem of a refused document (``Problem.to_dict``)."""

    line: int | None
    column: int | None
    item_line: int | None
    path: str
    message: str


class InvalidDocumentAnswer(ErrorAnswer):
    """A refused document: every problem (up to ``MAX_PROBLEMS``; ``more``
    counts the rest), or a bad query parameter or body under ``fields``."""

    problems: list[ProblemAnswer] | None = None
    more: int | None = None


# --- applying a document ----------------------------------------------------------

@dataclass
class SectionChanges:
    """What applying a section changes: names added, changed (with the
    fields that change), removed, and how many are unchanged."""

    added: list[str] = field(default_factory=list)
    changed: list[tuple[str, list[str]]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def any(self) -> bool:
        """Whether the section changes anything."""
        return bool(self.added or self.changed or self.removed)

    def to_dict(self) -> dict:
        """The changes as the API answers them."""
        return {"added": self.added, "changed": [{"name": name, "fields": fields} for name, fields in self.changed],
                "removed": self.removed, "unchanged": self.unchanged}


@dataclass
class ImportOutcome:
    """The changes of an import, per section, and whether they were applied."""

    sections: dict[str, SectionChanges]
    dry_run: bool
    pruned: bool
    config_version: int

    @property
    def changed_anything(self) -> bool:
        """Whether any section changes anything."""
        return any(changes.any for changes in self.sections.values())

    def summary(self) -> str:
        """One line per section: ``endpoints: 2 added, 1 changed, 0 removed, 10 unchanged``."""
        return "\n".join(
            f"{name}: {len(c.added)} added, {len(c.changed)} changed, {len(c.removed)} removed, "
            f"{c.unchanged} unchanged" for name, c in self.sections.items())

    def details(self) -> list[str]:
        """One line per item that changes (names and field names, never values)."""
        lines = []
        for name, changes in self.sections.items():
            lines += [f"+ {name}: {item}" for item in changes.added]
            lines += [f"~ {name}: {item} ({', '.join(fields)})" for item, fields in changes.changed]
            lines += [f"- {name}: {item}" for item in changes.removed]
        return lines

    def to_dict(self) -> dict:
        """The outcome as the API answers it."""
        return {"dryRun": self.dry_run, "prune": self.pruned, "applied": not self.dry_run and self.changed_anything,
                "configVersion": self.config_version,
                "sections": {name: changes.to_dict() for name, changes in self.sections.items()}}


class _ImportRun:
    """The state of one import while its sections are applied in order."""

    def __init__(self, parsed: ParsedDocument, prune: bool):
        self.parsed = parsed
        self.prune = prune
        self.problems: list[Problem] = []
        self.more = 0
        self.changes: dict[str, SectionChanges] = {}
        # Notification services by name once their section is applied (None: ambiguous).
        self.services: dict[str, NotificationService | None] = {}

    def problem(self, path: tuple, message: str) -> None:
        """Record a problem at ``path`` (up to ``MAX_PROBLEMS``, then count them)."""
        if len(self.problems) >= MAX_PROBLEMS:
            self.more += 1
            return
        self.problems.append(_located(self.parsed, path, message))

    def field_problems(self, path: tuple, errors: dict[str, str]) -> None:
        """An item's errors (a message per dotted field name, as the
        services report them) at the lines of their fields."""
        for name, message in errors.items():
            parts = () if name == "body" else tuple(name.split("."))
            self.problem(path + parts, message)

    def items(self, section: str) -> list[tuple[tuple, dict]] | None:
        """The section's items with their paths (None: the section is absent);
        an item that is not a mapping is a problem."""
        items = self.parsed.data.get(section, _ABSENT)
        if items is _ABSENT:
            return None
        if items is None:
            return []
        if not isinstance(items, list):
            self.problem((section,), "must be a list of items")
            return []
        out = []
        for index, item in enumerate(items):
            if isinstance(item, dict):
                out.append(((section, index), item))
            else:
                self.problem((section, index), "must be a mapping of fields and values")
        return out

    def keyed(self, items: list[tuple[tuple, dict]], what: str,
              key: str = "name") -> list[tuple[tuple, dict, str]]:
        """Items with their names (``key``); a missing or repeated name is a problem."""
        first: dict[str, tuple] = {}
        out = []
        for path, item in items:
            name = item.get(key)
            if not isinstance(name, str) or not name.strip():
                self.problem(path + (key,) if key in item else path,
                             ("must be text" if isinstance(name, (int, float, bool, list, dict)) else "is required")
                             + f": {what} is matched by its {key}")
                continue
            name = name.strip()
            if name in first:
                line = self.parsed.mark(first[name])
                self.problem(path + (key,), f"{name!r} is already the {key} of "
                             f"{_path_text(first[name])}" + (f" (line {line[0]})" if line else "")
                             + f": each {what} must have a {key} of its own")
                continue
            first[name] = path
            out.append((path, item, name))
        return out


def _stored_by_name(rows, key: str = "name") -> dict[str, Any]:
    """Rows by name (``key``); a name two rows share maps to None (ambiguous)."""
    by_name: dict[str, Any] = {}
    for row in rows:
        name = getattr(row, key)
        by_name[name] = None if name in by_name else row
    return by_name


def _apply_services(run: _ImportRun, section: str) -> None:
    changes = run.changes.setdefault(section, SectionChanges())
    stored = _stored_by_name(notifications.list_services())
    run.services = dict(stored)
    items = run.items(section)
    if items is None:
        return
    named = set()
    for path, item, name in run.keyed(items, "a notification service"):
        named.add(name)
        if name in stored and stored[name] is None:
            run.problem(path + ("name",), f"{name!r} is the name of several stored notification services; "
                        "rename them so that the name picks one")
            continue
        service = stored.get(name)
        data = {**item, "name": name}
        if problem := _masked_secret(data, service):
            run.field_problems(path, problem)
            continue
        try:
            spec, config = notifications.validated_input(data, stored=service, strict=True)
        except notifications.InvalidNotificationService as exc:
            run.field_problems(path, exc.errors)
            continue
        if service is None:
            service = NotificationService()
            notifications.apply_input(service, spec, config)
            db.session.add(service)
            run.services[name] = service
            changes.added.append(name)
            continue
        before = {"kind": service.kind, "config": dict(service.config or {}), "isEnabled": service.is_enabled,
                  "isDefault": service.is_default}
        after = {"kind": spec.kind, "config": config, "isEnabled": spec.is_enabled, "isDefault": spec.is_default}
        fields = _changed_fields(before, after)
        if not fields:
            changes.unchanged += 1
            continue
        notifications.apply_input(service, spec, config)
        changes.changed.append((name, fields))
    if run.prune:
        for name, service in stored.items():
            if name not in named:
                for row in _all_named(NotificationService, name):
                    db.session.delete(row)
                run.services.pop(name, None)
                changes.removed.append(name)


def _masked_secret(data: dict, stored: NotificationService | None) -> dict[str, str] | None:
    """A secret of a service's config given as the mask with no stored value
    of the same kind to keep (a new service, another kind, a new header)."""
    kind = data.get("kind")
    # A kind that is not text (a mapping, a list) names no notifier; validation says so.
    cls = NOTIFIERS.get(kind) if isinstance(kind, str) else None
    config = data.get("config")
    if cls is None or not isinstance(config, dict):
        return None  # validation names the kind or config
    kept = cls.keep_secrets(stored.config or {}, config) if stored is not None and stored.kind == cls.kind \
        else config
    errors = {}
    for key in cls.secret_fields:
        value = kept.get(key)
        # A mask, or a hint holding one (a webhook URL shows its host).
        masked = [key] if isinstance(value, str) and SECRET_MASK in value else []
        if isinstance(value, dict):  # headers: each value a secret of its own
            masked = [f"{key}.{name}" for name, item in value.items() if isinstance(item, str) and SECRET_MASK in item]
        for name in masked:
            errors[f"config.{name}"] = (f"holds the mask {SECRET_MASK} but there is no stored value to keep; "
                                        "write the value itself (export with --with-secrets)")
    return errors or None


def _all_named(model, name: str) -> list:
    return list(db.session.execute(select(model).where(model.name == name)).scalars())


def _changed_fields(before: dict, after: dict) -> list[str]:
    """The names of the fields that differ (one level into ``config`` and
    ``options``, so a changed secret is named but never shown)."""
    fields = []
    for key, old in before.items():
        new = after.get(key)
        if old == new:
            continue
        if key in ("config", "options") and isinstance(old, dict) and isinstance(new, dict):
            fields += [f"{key}.{name}" for name in sorted(set(old) | set(new), key=str)
                       if old.get(name) != new.get(name)]
        else:
            fields.append(key)
    return fields


def _apply_endpoints(run: _ImportRun, section: str) -> None:
    changes = run.changes.setdefault(section, SectionChanges())
    items = run.items(section)
    if items is None:
        return
    stored = _stored_by_name(endpoints.list_endpoints())
    references = endpoints.References()
    added: list[tuple[endpoints.EndpointInput, list]] = []
    named = set()
    for path, item, name in run.keyed(items, "an endpoint"):
        named.add(name)
        if name in stored and stored[name] is None:
            run.problem(path + ("name",), f"{name!r} is the name of several stored endpoints; "
                        "rename them so that the name picks one")
            continue
        endpoint = stored.get(name)
        data = {**item, "name": name}
        service_names = data.pop("notificationServices", _ABSENT)
        errors: dict[str, str] = {}
        if "notificationServiceIds" in data:
            errors["notificationServiceIds"] = ("is not a field of a document: name the services under "
                                                "notificationServices (ids differ between databases)")
            data.pop("notificationServiceIds")
        # Services are named, and resolved here from the names; the
        # endpoint's own checks see no ids, so that they query nothing per endpoint.
        services = None
        if service_names is not _ABSENT:
            services, problem = _named_services(run, service_names)
            if problem:
                errors["notificationServices"] = problem
        data["target"], problem = _stored_target(data.get("target"), endpoint)
        if problem:
            errors["target"] = problem
        try:
            data = endpoints.with_stored_secrets(data, endpoint)
            spec, _ = endpoints.checked_input(data, strict=True, references=references)
        except endpoints.InvalidEndpoint as exc:
            errors.update(exc.errors)
        if errors:
            run.field_problems(path, errors)
            continue
        if endpoint is None:
            added.append((spec, services if services is not None else references.services(None)))
            changes.added.append(name)
            continue
        before = {**endpoints.configuration_fields(endpoint),
                  "notificationServices": sorted(s.id for s in endpoint.notification_services)}
        after = {key: value for key, value in spec.model_dump(by_alias=True).items() if key in before}
        after["notificationServices"] = (sorted(s.id for s in services) if services is not None
                                         else before["notificationServices"])
        fields = _changed_fields(before, after)
        if not fields:
            changes.unchanged += 1
            continue
        endpoints.apply_update(endpoint, spec, services)
        changes.changed.append((name, fields))
    # The new endpoints go in together, as the batch API stores them (with
    # problems anywhere the transaction is rolled back in the end; until
    # then the later sections see them, as they will be).
    endpoints.insert_new(added)
    if run.prune:
        for name in stored:
            if name not in named:
                for row in _all_named(Endpoint, name):
                    db.session.delete(row)
                changes.removed.append(name)
    db.session.flush()


def _named_services(run: _ImportRun, names: Any) -> tuple[list[NotificationService] | None, str | None]:
    """The services an endpoint names, or the problem with the names."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None, "must be a list of notification service names"
    missing = [n for n in names if n not in run.services]
    if missing:
        return None, "names no notification service called " + ", ".join(repr(n) for n in missing)
    ambiguous = [n for n in names if run.services[n] is None]
    if ambiguous:
        return None, "names " + ", ".join(repr(n) for n in ambiguous) + ", which several services are called"
    return sorted({run.services[n] for n in names}, key=lambda s: s.id), None


def _apply_status_pages(run: _ImportRun, section: str) -> None:
    changes = run.changes.setdefault(section, SectionChanges())
    items = run.items(section)
    if items is None:
        return
    current = set(status_pages.published_groups())
    # Groups exist only once the endpoints are in; with problems there, they may not be.
    known = {name for name, _ in status_pages.groups()} if not run.problems else None
    wanted = set()
    for path, item in items:
        unknown = [key for key in item if key != "group"]
        for key in unknown:
            run.problem(path + (key,), "is not a field of a status page (it has group alone)")
        group = item.get("group")
        if not isinstance(group, str) or not group.strip():
            run.problem(path + ("group",) if "group" in item else path,
                        "is required: the endpoint group whose page is published")
            continue
        if known is not None and group not in known:
            run.problem(path + ("group",), f"names {group!r}, a group no endpoint is in")
            continue
        wanted.add(group)
    published = wanted if run.prune else wanted | current
    changes.added = sorted(published - current)
    changes.removed = sorted(current - published)
    changes.unchanged = len(current & published)
    if changes.any and not run.problems:
        try:
            status_pages.replace_published(sorted(published))
        except ValueError as exc:
            run.problem((section,), str(exc))


def _export_maintenance_windows(with_secrets: bool) -> list[dict]:
    names = dict(db.session.execute(select(Endpoint.id, Endpoint.name)).all())
    out = []
    for window in maintenance.list_windows():
        fields = maintenance.input_fields(window)
        # Endpoints by name, as everywhere in a document; one deleted since is left out.
        fields["endpoints"] = sorted(names[i] for i in fields.pop("endpointIds") if i in names)
        out.append(_dropping_none(fields))
    return out


def _apply_maintenance_windows(run: _ImportRun, section: str) -> None:
    changes = run.changes.setdefault(section, SectionChanges())
    items = run.items(section)
    if items is None:
        return
    stored = _stored_by_name(maintenance.list_windows(), "title")
    # The endpoints as the document left them (its section is applied).
    endpoint_ids: dict[str, int | None] = {}
    for endpoint_id, name in db.session.execute(select(Endpoint.id, Endpoint.name)).all():
        endpoint_ids[name] = None if name in endpoint_ids else endpoint_id
    named = set()
    for path, item, title in run.keyed(items, "a maintenance window", "title"):
        named.add(title)
        if title in stored and stored[title] is None:
            run.problem(path + ("title",), f"{title!r} is the title of several stored maintenance windows; "
                        "rename them so that the title picks one")
            continue
        data = {**item, "title": title}
        errors: dict[str, str] = {}
        for name in ("startsAt", "endsAt"):
            # YAML reads an unquoted 2026-01-31T02:00:00Z as a time: take it as written.
            if isinstance(data.get(name), (datetime, date)):
                data[name] = data[name].isoformat()
        if "endpointIds" in data:
            data.pop("endpointIds")
            errors["endpointIds"] = ("is not a field of a document: name the endpoints under endpoints "
                                     "(ids differ between databases)")
        names = data.pop("endpoints", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            errors["endpoints"] = "must be a list of endpoint names"
        elif unknown := [n for n in names if n not in endpoint_ids]:
            errors["endpoints"] = "names no endpoint called " + ", ".join(repr(n) for n in unknown)
        elif ambiguous := [n for n in names if endpoint_ids[n] is None]:
            errors["endpoints"] = "names " + ", ".join(repr(n) for n in ambiguous) + ", which several endpoints are called"
        else:
            data["endpointIds"] = [endpoint_ids[n] for n in names]
        try:
            spec = maintenance.parse_input(data, strict=True)
        except maintenance.InvalidMaintenanceWindow as exc:
            for key, message in exc.errors.items():
                key = "endpoints" if key == "endpointIds" else key  # the document's name for it
                errors.setdefault(key, message)
        if errors:
            run.field_problems(path, errors)
            continue
        window = stored.get(title)
        if window is None:
            window = MaintenanceWindow()
            maintenance.apply_input(window, spec)
            db.session.add(window)
            changes.added.append(title)
            continue
        # The input as it would be stored, read back the way the stored one is.
        probe = MaintenanceWindow()
        maintenance.apply_input(probe, spec)
        fields = _changed_fields(maintenance.input_fields(window), maintenance.input_fields(probe))
        if not fields:
            changes.unchanged += 1
            continue
        maintenance.apply_input(window, spec)
        changes.changed.append((title, ["endpoints" if f == "endpointIds" else f for f in fields]))
    if run.prune:
        for title in stored:
            if title not in named:
                for row in db.session.execute(select(MaintenanceWindow).where(MaintenanceWindow.title == title)
                                              ).scalars():
                    db.session.delete(row)
                changes.removed.append(title)


@dataclass(frozen=True)
class Section:
    """One section of a document: how it is written and how it is applied.
    Sections are applied in ``SECTIONS`` order (what an item names comes first)."""

    name: str
    export: Callable[[bool], list]
    apply: Callable[[_ImportRun, str], None]


SECTIONS = (
    Section("notificationServices", _export_services, _apply_services),
    Section("endpoints", _export_endpoints, _apply_endpoints),
    Section("statusPages", _export_status_pages, _apply_status_pages),
    Section("maintenanceWindows", _export_maintenance_windows, _apply_maintenance_windows),
)
_TOP_LEVEL = ("version",) + tuple(section.name for section in SECTIONS)


def refusal(state: configuration.ClusterState | None = None) -> str | None:
    """Why this instance takes no import (None: it does)."""
    state = state or configuration.snapshot()
    if state.accepts_configuration:
        return None
    where = f" at {state.primary_url}" if state.is_dependent and state.primary_url else ""
    return f"this instance is {state.role}; import configuration on the primary{where}"


@collector_paused()
def import_document(parsed: ParsedDocument, *, prune: bool = False, dry_run: bool = False) -> ImportOutcome:
    """Apply a document in one transaction, or with ``dry_run`` only say what
    it would change. ``prune``: the document is the whole configuration, so
    what it does not name is removed (in the sections it has).

    Raises ``ImportRefused`` on an instance that takes no configuration and
    ``InvalidDocument`` (with every problem found) when any item is wrong;
    either way nothing is applied.
    """
    if reason := refusal():
        raise ImportRefused(reason)
    data = parsed.data
    if not isinstance(data, dict):
        raise InvalidDocument([_located(parsed, (), "the document must be a mapping with the sections "
                                        + ", ".join(_TOP_LEVEL[1:]))])
    run = _ImportRun(parsed, prune)
    for key in data:
        if key not in _TOP_LEVEL:
            run.problem((key,), "is not a section of a configuration document "
                        f"({', '.join(_TOP_LEVEL)})")
    if data.get("version", DOCUMENT_VERSION) != DOCUMENT_VERSION:
        run.problem(("version",), f"must be {DOCUMENT_VERSION}")
    if run.problems:
        raise InvalidDocument(run.problems)
    try:
        # 1. One import at a time: two at once would each add the endpoints
        #    the other is adding (names are not unique in the database).
        configuration.lock_instance()
        # 2. The role is read under a lock, so that no failover changes it
        #    while the import is being applied.
        if reason := refusal(configuration.locked_snapshot()):
            raise ImportRefused(reason)
        for section in SECTIONS:
            section.apply(run, section.name)
        if run.problems:
            raise InvalidDocument(run.problems, more=run.more)
        if dry_run:
            db.session.rollback()
        else:
            db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    outcome = ImportOutcome(run.changes, dry_run=dry_run, pruned=prune,
                            config_version=configuration.config_version())
    if not dry_run and outcome.changed_anything:
        logger.info("configuration imported (version %s): %s", outcome.config_version,
                    outcome.summary().replace("\n", "; "))
    return outcome


__all__ = ["DOCUMENT_VERSION", "ConfigDocument", "ExportQuery", "ImportOutcomeAnswer", "ImportQuery",
           "InvalidDocumentAnswer", "JSON_MEDIA_TYPE", "SECTIONS", "YAML_MEDIA_TYPES", "ImportOutcome",
           "ImportRefused", "InvalidDocument", "ParsedDocument", "Problem", "Section", "SectionChanges",
           "export_document", "export_header", "import_document", "masked_target", "parse", "parse_json",
           "parse_yaml", "refusal", "to_yaml"]
