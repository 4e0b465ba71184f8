"""Creating, changing and removing endpoints, with validation.

The JSON API, the command line and the UI all go through here, so an endpoint
is validated the same way wherever it comes from and every change is one
transaction.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import time
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlparse, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from sqlalchemy import func, insert, select, text

from app.checks import CHECK_TYPES, MASK, SECRET_OPTIONS, is_secret_header, public_target
from app.collector_pause import collector_paused
from app.extensions import db
from app.models import STATUS_DOWN, STATUS_PARTIAL, STATUS_PENDING, STATUS_UP, Endpoint
from app.models.endpoint import consensus_rule_text
from app.services import configuration
from app.services.consensus import ConsensusAnswer, Rule
from app.services.input_errors import InvalidInput
from app.services.openapi import Answer
from app.services.validation_messages import choice_error, messages_of

logger = logging.getLogger(__name__)

MIN_INTERVAL_SECONDS = 5
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_NAME_LENGTH = 200
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$")


class InvalidEndpoint(InvalidInput):
    """Bad endpoint input; ``errors`` maps each bad field to its message."""


class EndpointInput(BaseModel):
    """An endpoint as a client sends it (camelCase on the wire).

    Each field is checked on its own here; what depends on the check type
    or on two fields together is checked by ``parse_input``, so that every
    bad field is reported at once.
    """

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    check_type: str = Field(json_schema_extra={"enum": list(CHECK_TYPES)})
    target: str = Field(min_length=1, max_length=2048)
    port: int | None = Field(default=None, ge=1, le=65535)
    options: dict[str, Any] = Field(default_factory=dict)
    interval_seconds: int = Field(default=60, ge=MIN_INTERVAL_SECONDS, le=86400)
    # None: ``default_timeout`` of the interval.
    timeout_seconds: float | None = Field(default=None, gt=0, le=300)
    failure_threshold: int = Field(default=1, ge=1, le=100)
    success_threshold: int = Field(default=1, ge=1, le=100)
    is_paused: bool = False
    group: str | None = Field(default=None, max_length=100)
    # While DOWN, remind the notification services this often (minutes); none: never.
    reminder_interval_minutes: int | None = Field(default=None, ge=1, le=10080)
    # Omitted on create: the default services (``is_default``); on update: unchanged.
    notification_service_ids: list[int] | None = None
    # Which instances check it (their ids); None: every location.
    locations: list[str] | None = Field(default=None, min_length=1, max_length=100)
    # When the voting locations make it DOWN: "majority" or "atLeast:N".
    consensus_rule: str = Field(default="majority", json_schema_extra={"pattern": r"^\s*(majority|atLeast:([1-9][0-9]?|100))\s*$"})
    # Alert when some locations see it DOWN but not enough for the rule.
    alert_on_partial: bool = False
    # Alert once when an HTTPS certificate has fewer days left than this.
    cert_expiry_days: int = Field(default=14, ge=1, le=365)

    @field_validator("locations")
    @classmethod
    def _instance_ids(cls, value):
        if value is None:
            return None
        for instance_id in value:
            if not isinstance(instance_id, str) or not re.fullmatch(r"[A-Za-z0-9-]{8,64}", instance_id):
                raise ValueError("must be a list of instance ids (8 to 64 letters, digits or dashes), "
                                 "or null for every location")
        if len(set(value)) != len(value):
            raise ValueError("names an instance twice")
        return value

    @field_validator("consensus_rule")
    @classmethod
    def _known_rule(cls, value):
        return Rule.parse(value).text

    @field_validator("check_type")
    @classmethod
    def _known_type(cls, value):
        if value not in CHECK_TYPES:
            raise ValueError(f"must be one of {', '.join(CHECK_TYPES)}")
        return value


def default_timeout(interval_seconds: float) -> float:
    """The timeout of an endpoint that sets none: 10 s, or half the interval
    when that is shorter (a check must end before the next is due)."""
    return min(DEFAULT_TIMEOUT_SECONDS, interval_seconds / 2)


def _target_problem(check_type: str, target: str) -> str | None:
    if check_type == "http":
        try:
            parsed = urlparse(target)
        except ValueError:
            return "is not a valid URL"
        if parsed.scheme not in {"http", "https"}:
            return "must be a URL starting with http:// or https://"
        if not parsed.hostname:
            return "has no host name"
        try:
            parsed.port  # noqa: B018 - raises on a bad port
        except ValueError:
            return "has an invalid port"
    elif check_type in {"tcp", "ping"}:
        if not _is_host(target):
            return "must be a host name or IP address (no scheme or port)"
    elif check_type.startswith("kafka"):
        for server in target.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536 or not _is_host(host.strip("[]")):
                return "must be bootstrap servers as host:port[,host:port...]"
    return None


def _is_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(value))


# Stand-ins for required fields that are wrong, so that the other fields can
# still be checked against each other and against the check type.
_STAND_INS = {"name": "-", "target": "-"}


def parse_input(data: Any, *, strict: bool = False, sent: Any = None) -> EndpointInput:
    """Validate a payload; raise ``InvalidEndpoint`` naming every bad field.

    ``strict``: take JSON's types as they are (the API): ``"60"`` is not a
    number and ``1`` is not ``true``. Otherwise text is read as numbers and
    booleans, as a form sends them. ``sent``: the fields the client sent
    (default: all of ``data``); of two fields that disagree, one the client
    did not send is never the one blamed.
    """
    if not isinstance(data, dict):
        raise InvalidEndpoint({"body": "must be a JSON object"})
    sent = {_wire_name(str(name)) for name in (data if sent is None else sent)}
    errors: dict[str, str] = {}
    try:
        spec = EndpointInput.model_validate(data, strict=strict)
    except ValidationError as exc:
        errors = messages_of(exc, EndpointInput, unknown_field="is not a field of an endpoint")
        spec = _valid_part(data, errors, strict)
    if spec is not None:
        errors.update(_type_specific_errors(spec, {key.split(".")[0] for key in errors}, sent, strict))
    if errors:
        raise InvalidEndpoint(errors)
    return spec


def _wire_name(name: str) -> str:
    return to_camel(name) if "_" in name else name


def _valid_part(data: dict, errors: dict[str, str], strict: bool) -> EndpointInput | None:
    """The input with its bad fields left out (defaults or stand-ins in their
    place), to check the rest further; None when the check type is bad."""
    bad = {key.split(".")[0] for key in errors}
    if "checkType" in bad or "check_type" in bad:
        return None
    rest = {name: value for name, value in data.items() if _wire_name(name) not in bad}
    rest.update({name: stand_in for name, stand_in in _STAND_INS.items() if name in bad})
    try:
        return EndpointInput.model_validate(rest, strict=strict)
    except ValidationError:
        return None


def _type_specific_errors(spec: EndpointInput, bad: set[str], sent: set[str], strict: bool) -> dict[str, str]:
    """What is wrong for this check type, or between two fields; fills in
    the default timeout and the validated options."""
    kind = CHECK_TYPES[spec.check_type]
    errors: dict[str, str] = {}
    if "target" not in bad:
        problem = _target_problem(spec.check_type, spec.target)
        if problem:
            errors["target"] = problem
    if "port" not in bad:
        if kind.needs_port and spec.port is None:
            errors["port"] = f"is required for {kind.label} checks"
        elif not kind.needs_port and spec.port is not None:
            errors["port"] = f"is not used by {kind.label} checks; put it in the target"
    if not bad & {"intervalSeconds", "timeoutSeconds"}:
        if spec.timeout_seconds is None:
            spec.timeout_seconds = default_timeout(spec.interval_seconds)
        elif spec.timeout_seconds >= spec.interval_seconds:
            # Blame the field the client sent: it is the one to change.
            if "timeoutSeconds" in sent or "intervalSeconds" not in sent:
                errors["timeoutSeconds"] = (f"must be shorter than the interval ({spec.interval_seconds} s): "
                                            "lower the timeout or raise the interval")
            else:
                errors["intervalSeconds"] = (f"must be longer than the timeout ({spec.timeout_seconds:g} s): "
                                             "raise the interval or lower the timeout")
    if "options" not in bad:
        try:
            validated = kind.options_model.model_validate(spec.options, strict=strict)
        except ValidationError as exc:
            errors.update(messages_of(exc, kind.options_model, prefix="options.",
                                      unknown_field=f"is not a setting of {kind.label} checks"))
        else:
            spec.options = validated.model_dump(mode="json", exclude_unset=True)
    return errors


def configuration_fields(endpoint: Endpoint) -> dict:
    """An endpoint's configuration as input fields (camelCase), without runtime state."""
    return {
        "name": endpoint.name,
        "checkType": endpoint.check_type,
        "target": endpoint.target,
        "port": endpoint.port,
        "options": dict(endpoint.options or {}),
        "intervalSeconds": endpoint.interval_seconds,
        "timeoutSeconds": endpoint.timeout_seconds,
        "failureThreshold": endpoint.failure_threshold,
        "successThreshold": endpoint.success_threshold,
        "isPaused": endpoint.is_paused,
        "group": endpoint.group_name,
        "reminderIntervalMinutes": endpoint.reminder_interval_minutes,
        "locations": list(endpoint.location_ids) if endpoint.location_ids is not None else None,
        "consensusRule": consensus_rule_text(endpoint.consensus_rule, endpoint.consensus_min_down),
        "alertOnPartial": endpoint.alert_on_partial,
        "certExpiryDays": endpoint.cert_expiry_days,
    }


def with_stored_secrets(data: Any, endpoint: Endpoint | None) -> Any:
    """``data`` with the secrets that API answers hide put back from ``endpoint``.

    An answer shows the target without its credentials and secret options
    and headers as ``MASK``, so that sending it back (read, modify, write)
    never replaces a secret with what was shown:

    1. a target equal to the stored one without its credentials keeps them;
       one with an empty user part (``https://@host/``) drops them;
    2. a secret option or header sent as ``MASK`` keeps the stored value
       (headers matched in any case); a mask with nothing stored under that
       name is an error naming it.
    """
    if not isinstance(data, dict):
        return data
    data = dict(data)
    target = data.get("target")
    if isinstance(target, str):
        data["target"] = _stored_target(target.strip(), endpoint.target if endpoint is not None else None)
    options = data.get("options")
    if isinstance(options, dict):
        stored = dict(endpoint.options or {}) if endpoint is not None else {}
        data["options"] = _with_stored_options(options, stored)
    return data


def _stored_target(target: str, stored: str | None) -> str:
    if stored is not None and target == public_target(stored):
        return stored  # as shown: unchanged, credentials and all
    if "://" in target and "@" in target:
        try:
            parts = urlsplit(target)
            if parts.username == "" and parts.password is None:
                return urlunsplit(parts._replace(netloc=parts.netloc.split("@", 1)[1]))
        except ValueError:
            pass  # validation names the bad target
    return target


def _with_stored_options(options: dict, stored: dict) -> dict:
    errors: dict[str, str] = {}
    missing = f"is the mask {MASK} but there is no stored value to keep; send the value itself"
    options = dict(options)
    for name in SECRET_OPTIONS:
        if options.get(name) == MASK:
            if stored.get(name):
                options[name] = stored[name]
            else:
                errors[f"options.{name}"] = missing
    headers = options.get("headers")
    if isinstance(headers, dict) and MASK in headers.values():
        stored_headers = stored.get("headers") if isinstance(stored.get("headers"), dict) else {}
        by_name = {str(k).lower(): v for k, v in stored_headers.items()}
        headers = dict(headers)
        for name, value in headers.items():
            if value != MASK or not is_secret_header(str(name)):
                continue  # not a value the API masks: taken as sent
            if by_name.get(str(name).lower()):
                headers[name] = by_name[str(name).lower()]
            else:
                errors[f"options.headers.{name}"] = missing
        options["headers"] = headers
    if errors:
        raise InvalidEndpoint(errors)
    return options


def apply_input(endpoint: Endpoint, spec: EndpointInput) -> None:
    """Set a validated input's settings on an endpoint."""
    if spec.locations is None:
        here = True  # every location: no need to ask which one this is
    else:
        with db.session.no_autoflush:  # a new endpoint is not in the session yet
            here = configuration.instance_id() in spec.locations
    for column, value in _columns(spec, checked_here=here).items():
        setattr(endpoint, column, value)


def _columns(spec: EndpointInput, *, checked_here: bool) -> dict[str, Any]:
    """The configuration columns of a validated input (and whether this
    instance is one of its locations)."""
    rule = Rule.parse(spec.consensus_rule)
    return {
        "name": spec.name,
        "check_type": spec.check_type,
        "target": spec.target,
        "port": spec.port,
        "options": spec.options,
        "interval_seconds": spec.interval_seconds,
        "timeout_seconds": spec.timeout_seconds,
        "failure_threshold": spec.failure_threshold,
        "success_threshold": spec.success_threshold,
        "is_paused": spec.is_paused,
        "group_name": spec.group,
        "reminder_interval_minutes": spec.reminder_interval_minutes,
        "location_ids": spec.locations,
        "consensus_rule": rule.kind,
        "consensus_min_down": rule.count,
        "alert_on_partial": spec.alert_on_partial,
        "cert_expiry_days": spec.cert_expiry_days,
        "checked_here": checked_here,
    }


class References:
    """What endpoints name, each read once however many endpoints name it:
    the cluster's members (``locations``) and the notification services.
    One per request or import: nothing is kept beyond it."""

    def __init__(self):
        self._members: set[str] | None = None
        self._services: dict[int, Any] | None = None
        self._defaults: list | None = None

    def unknown_locations(self, locations: Any) -> str | None:
        """What is wrong with the instances an endpoint names: each must be
        a member of the cluster."""
        if not isinstance(locations, list):
            return None
        if self._members is None:
            from app.models import MonitoringInstance

            self._members = set(db.session.execute(select(MonitoringInstance.id)).scalars())
            self._members.add(configuration.instance_id())
        unknown = [str(instance_id) for instance_id in locations if instance_id not in self._members]
        if unknown:
            return "no instance with id " + ", ".join(unknown) + " is a member of this cluster"
        return None

    def services(self, service_ids: list[int] | None) -> list:
        """The services these ids name (``None``: the default set), or ``InvalidEndpoint``."""
        from app.models import NotificationService
        from app.services import notifications

        if service_ids is None:
            if self._defaults is None:
                self._defaults = notifications.default_services()
            return list(self._defaults)
        if self._services is None:
            self._services = {service.id: service for service in
                              db.session.execute(select(NotificationService)).scalars()}
        try:
            return notifications.resolve_services(service_ids, known=self._services)
        except notifications.InvalidNotificationService as exc:
            raise InvalidEndpoint(exc.errors) from None


def _checked_input(data: Any, *, strict: bool, sent: Any = None,
                   references: References | None = None) -> tuple[EndpointInput, list | None]:
    """``parse_input`` and the checks that need the database (the instances
    and notification services it names exist), every bad field reported at
    once; returns the input and the services it names (None: not named).
    ``references``: what a batch has read already."""
    references = references or References()
    errors: dict[str, str] = {}
    try:
        spec = parse_input(data, strict=strict, sent=sent)
    except InvalidEndpoint as exc:
        errors, spec = dict(exc.errors), None
    if not isinstance(data, dict):
        raise InvalidEndpoint(errors)
    fields = spec.model_dump(by_alias=True) if spec is not None else data
    if not any(key.startswith("locations") for key in errors):
        if problem := references.unknown_locations(fields.get("locations")):
            errors["locations"] = problem
    services = None
    if fields.get("notificationServiceIds") is not None and not any(
            key.startswith("notificationServiceIds") for key in errors):
        try:
            services = references.services(fields["notificationServiceIds"])
        except InvalidEndpoint as exc:
            errors.update(exc.errors)
    if errors:
        raise InvalidEndpoint(errors)
    return spec, services


def create_endpoint(data: dict, *, from_api: bool = False) -> Endpoint:
    """Validate and store a new endpoint; it is checked at once.

    ``from_api``: ``data`` is JSON, taken with its types as they are, and
    may be an API answer sent back, with its hidden secrets (see
    ``with_stored_secrets``).
    """
    references = References()
    spec, services = _checked_input(with_stored_secrets(data, None) if from_api else data, strict=from_api,
                                    references=references)
    endpoint = Endpoint(status=STATUS_PENDING, next_check_at=0.0)
    endpoint.notification_services = services if services is not None else references.services(None)
    apply_input(endpoint, spec)
    db.session.add(endpoint)
    db.session.commit()
    logger.info("endpoint %s (%s) created: %s %s", endpoint.id, endpoint.name,
                endpoint.check_type, public_target(endpoint.target))
    return endpoint


def update_endpoint(endpoint: Endpoint, data: dict, *, partial: bool, from_api: bool = False) -> Endpoint:
    """Replace (``partial=False``) or patch an endpoint's settings.

    ``from_api``: ``data`` is JSON, taken with its types as they are, and
    may be an API answer sent back, whose hidden secrets keep the stored
    ones (see ``with_stored_secrets``). The edit form shows the real values
    instead, so what it sends is taken as is.
    """
    if not isinstance(data, dict):
        raise InvalidEndpoint({"body": "must be a JSON object"})
    merged = {**configuration_fields(endpoint), **data} if partial else data
    if partial and "checkType" in data and "options" not in data and data["checkType"] != endpoint.check_type:
        merged["options"] = {}  # options of the old type mean nothing to the new one
    spec, services = _checked_input(with_stored_secrets(merged, endpoint) if from_api else merged,
                                    strict=from_api, sent=data)
    apply_update(endpoint, spec, services)
    db.session.commit()
    logger.info("endpoint %s (%s) updated", endpoint.id, endpoint.name)
    return endpoint


def apply_update(endpoint: Endpoint, spec: EndpointInput, services: list | None) -> None:
    """Set a validated input on a stored endpoint (``services`` None: keep
    its notification services); the caller commits."""
    if services is not None:
        endpoint.notification_services = services
    was_paused, old_interval = endpoint.is_paused, endpoint.interval_seconds
    apply_input(endpoint, spec)
    if was_paused and not spec.is_paused:
        endpoint.next_check_at = 0.0  # check at once when resumed
    elif spec.interval_seconds < old_interval and endpoint.next_check_at > 0:
        # A shorter interval counts from now, not from the old schedule.
        endpoint.next_check_at = min(endpoint.next_check_at, time.time() + spec.interval_seconds)
    if spec.is_paused:
        endpoint.consecutive_failures = endpoint.consecutive_successes = 0


def checked_input(data: Any, *, strict: bool, sent: Any = None,
                  references: References | None = None) -> tuple[EndpointInput, list | None]:
    """Every check ``create_endpoint`` and ``update_endpoint`` make, storing
    nothing: for a caller that stores many in one transaction of its own
    (and passes one ``References`` for all of them)."""
    return _checked_input(data, strict=strict, sent=sent, references=references)


def set_paused(endpoint: Endpoint, paused: bool) -> Endpoint:
    return update_endpoint(endpoint, {"isPaused": paused}, partial=True)


# --- many at once ------------------------------------------------------------------

# The most endpoints one batch request creates (a configuration document
# has no such limit: its size limit bounds it).
MAX_BATCH_ENDPOINTS = 10_000


class ChangeRefused(Exception):
    """This instance takes no configuration (a dependent, a fenced primary)."""


@collector_paused()
def create_endpoints(items: Any) -> list[int]:
    """Validate and store many new endpoints from the JSON API, all or none,
    in one transaction; their ids, in the order given.

    Each item is validated as ``create_endpoint(item, from_api=True)``
    validates one; a bad item is an ``InvalidEndpoint`` naming every bad
    field of every bad item as ``endpoints[INDEX].FIELD``, and nothing is
    stored; so is a batch of more than ``MAX_BATCH_ENDPOINTS``.
    ``config_version`` moves once for the whole batch.
    """
    if not isinstance(items, list):
        raise InvalidEndpoint({"endpoints": "must be a list of endpoints"})
    if not items:
        raise InvalidEndpoint({"endpoints": "must hold at least one endpoint"})
    if len(items) > MAX_BATCH_ENDPOINTS:
        raise InvalidEndpoint({"endpoints": f"holds {len(items):,} endpoints; at most {MAX_BATCH_ENDPOINTS:,} "
                                            "are created in one request: send the rest in another"})
    references = References()
    errors: dict[str, str] = {}
    new = []
    for index, item in enumerate(items):
        try:
            spec, services = _checked_input(with_stored_secrets(item, None), strict=True, references=references)
        except InvalidEndpoint as exc:
            errors.update({f"endpoints[{index}]" + ("" if name == "body" else f".{name}"): message
                           for name, message in exc.errors.items()})
            continue
        new.append((spec, services if services is not None else references.services(None)))
    if errors:
        raise InvalidEndpoint(errors)
    try:
        configuration.lock_instance()
        # The role is read under the lock, so that no failover changes it
        # while the batch is being stored.
        state = configuration.locked_snapshot()
        if not state.accepts_configuration:
            raise ChangeRefused(f"this instance is {state.role}; change configuration on the primary"
                                + (f" at {state.primary_url}" if state.is_dependent and state.primary_url else ""))
        ids = insert_new(new)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return ids


def insert_new(new: list[tuple[EndpointInput, list]]) -> list[int]:
    """Store validated new endpoints (each with its notification services)
    in the caller's transaction; their ids, in order. The caller commits.

    1. Pending changes are flushed first: services the endpoints name get
       their ids.
    2. Ids are taken before the insert (``_new_ids``), so the endpoints and
       their service links go in as two executemany statements, with no
       ORM object or ``RETURNING`` per row: at 10,000 endpoints the ORM's
       flush and PostgreSQL's multi-row ``RETURNING`` inserts cost seconds.
    3. ``config_version`` moves once, as for any one transaction.
    """
    from app.models.endpoint import endpoint_notifications

    if not new:
        return []
    db.session.flush()
    ids = _new_ids(len(new))
    here = None
    rows, links = [], []
    for endpoint_id, (spec, services) in zip(ids, new):
        if spec.locations is not None and here is None:
            here = configuration.instance_id()
        rows.append({"id": endpoint_id, "status": STATUS_PENDING, "next_check_at": 0.0,
                     **_columns(spec, checked_here=spec.locations is None or here in spec.locations)})
        links += [{"endpoint_id": endpoint_id, "notification_service_id": service.id} for service in services]
    db.session.execute(insert(Endpoint.__table__), rows)
    if links:
        db.session.execute(insert(endpoint_notifications), links)
    configuration.configuration_written()
    logger.info("%d endpoints created (ids %d to %d)", len(ids), ids[0], ids[-1])
    return ids


def _new_ids(count: int) -> list[int]:
    """``count`` ids for new endpoints, never handed out before."""
    if db.engine.dialect.name == "postgresql":
        return list(db.session.execute(
            text("SELECT nextval(pg_get_serial_sequence('endpoints', 'id')) FROM generate_series(1, :count)"),
            {"count": count}).scalars())
    # SQLite has no sequence to draw from: under the write lock no other
    # writer can take ids until this transaction ends, and AUTOINCREMENT
    # (sqlite_sequence) remembers the highest id ever used, deleted or not.
    configuration.lock_instance()
    last = max(db.session.execute(text("SELECT MAX(seq) FROM sqlite_sequence WHERE name = 'endpoints'")
                                  ).scalar() or 0,
               db.session.execute(select(func.max(Endpoint.id))).scalar() or 0)
    return list(range(last + 1, last + 1 + count))


def delete_endpoint(endpoint: Endpoint) -> None:
    """Delete an endpoint with its results and history (one transaction)."""
    logger.info("endpoint %s (%s) deleted", endpoint.id, endpoint.name)
    db.session.delete(endpoint)
    db.session.commit()


def get_endpoint(endpoint_id: int) -> Endpoint | None:
    return db.session.get(Endpoint, endpoint_id)


def matching(search: str):
    """Endpoints whose name, group or target contains ``search``, in any case.

    A target holding credentials (``user:password@``) is matched by name and
    group only: a search must not reveal, a character at a time, what pages
    and answers never show. ``%`` and ``_`` in the search are literal.
    """
    escaped = search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    return (Endpoint.name.ilike(pattern, escape="\\") | Endpoint.group_name.ilike(pattern, escape="\\")
            | (Endpoint.target.ilike(pattern, escape="\\") & ~Endpoint.target.contains("@")))


# What an endpoint's status can be, and so what a list can be filtered by.
STATUSES = (STATUS_UP, STATUS_PARTIAL, STATUS_DOWN, STATUS_PENDING)


def list_endpoints(*, search: str | None = None, status: str | None = None,
                   consensus: str | None = None) -> list[Endpoint]:
    """Endpoints by name, matching ``search`` and in ``status`` (any case).

    ``consensus`` filters like ``status`` and wins over it: the stored
    status is the one consensus decided. An unknown status is an
    ``InvalidEndpoint`` naming the filter and the statuses there are.
    """
    errors = {name: problem for name, value in (("status", status), ("consensus", consensus))
              if value and (problem := choice_error(value, STATUSES))}
    if errors:
        raise InvalidEndpoint(errors)
    query = select(Endpoint).order_by(Endpoint.name, Endpoint.id)
    if search:
        query = query.where(matching(search))
    if consensus or status:
        query = query.where(Endpoint.status == (consensus or status).upper())
    return list(db.session.execute(query).scalars())


# --- what the JSON API answers ---------------------------------------------------

def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


# A status in any case, or nothing (a form's "any").
_STATUS_FILTER = "^(" + "|".join(_any_case(s) for s in STATUSES) + ")?$"


class EndpointFilters(BaseModel):
    """The filters of the endpoint list (query parameters)."""

    search: str | None = Field(default=None, description="Name, group or target contains this, in any case")
    status: str | None = Field(default=None, pattern=_STATUS_FILTER,
                               description="One of " + ", ".join(STATUSES) + ", in any case; empty: any")
    consensus: str | None = Field(default=None, pattern=_STATUS_FILTER, description="As status, and wins over it")


class EndpointAnswer(Answer):
    """An endpoint as the API shows it: credentials out of the target,
    secret options and headers masked, with its consensus."""

    id: int
    name: str
    check_type: str
    target: str
    port: int | None
    options: dict[str, Any]
    interval_seconds: int
    timeout_seconds: float | None
    failure_threshold: int
    success_threshold: int
    is_paused: bool
    group: str | None
    reminder_interval_minutes: int | None
    locations: list[str] | None
    consensus_rule: str
    alert_on_partial: bool
    cert_expiry_days: int
    notification_service_ids: list[int]
    status: Literal[STATUSES]
    status_changed_at: datetime | None
    last_checked_at: datetime | None
    last_response_time_ms: float | None
    last_failure_reason: str | None
    created_at: datetime | None
    updated_at: datetime | None
    consensus: ConsensusAnswer
    maintenance_window_id: int | None = Field(description="The maintenance window the endpoint is in now, if any")


class EndpointListAnswer(Answer):
    endpoints: list[EndpointAnswer]


class EndpointBatchInput(BaseModel):
    """Endpoints to create together (``POST /api/v1/endpoints/batch``), all or none."""

    model_config = ConfigDict(extra="forbid")

    endpoints: list[EndpointInput] = Field(min_length=1, max_length=MAX_BATCH_ENDPOINTS)


class EndpointBatchAnswer(Answer):
    """The endpoints a batch created: their ids in the order sent, and the
    configuration version that dependents will pull them at."""

    created: int
    endpoint_ids: list[int]
    config_version: int
