"""The endpoint form: fields per check type, generated from each type's
``Options`` model, and the mapping from posted form data to the service's
input (and from its errors back to form fields).

Top-level fields carry the JSON API's names (``intervalSeconds``...), so the
service's error keys name form fields directly. Option fields are posted as
``opt_<name>``.
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from app.checks import CHECK_TYPES, SECRET_OPTIONS
from app.services.validation_messages import sentence

OPTION_PREFIX = "opt_"
# Secrets are never rendered back; a blank field on edit keeps the stored one.
_TEXTAREAS = frozenset({"body", "message"})

HELP = {
    "expected_status_codes": "Comma-separated codes, ranges or classes: 200-299, 301, 4xx",
    "headers": "One per line: Name: value",
    "keyword": "The check fails unless the response body contains this text",
    "keyword_absent": "Fail when the keyword is present instead",
    "ca_bundle": "Path of a PEM file on this machine (private CA)",
    "max_body_bytes": "Bytes of the body searched for the keyword",
    "interval": "Seconds between packets",
    "partitions": "Comma-separated partition numbers; empty reads all",
    "max_message_age_seconds": "DOWN when the newest message is older",
    "message": "Empty sends a small JSON heartbeat",
    "ssl_cafile": "Path of a CA bundle on this machine",
}


@dataclass
class OptionField:
    """One option input, described from the options model."""

    name: str
    label: str
    kind: str  # checkbox, number, select, text, password, textarea, lines, list
    default: Any = None
    choices: list[str] = field(default_factory=list)
    required: bool = False
    step: str = "1"
    help: str = ""

    @property
    def input_name(self) -> str:
        return OPTION_PREFIX + self.name


def _unwrap_optional(annotation):
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


_ACRONYMS = {"tls": "TLS", "ca": "CA", "ssl": "SSL", "sasl": "SASL", "cafile": "CA file"}


def _label(name: str) -> str:
    """``verify_tls`` -> ``Verify TLS``: option names as people write them."""
    words = [_ACRONYMS.get(word, word) for word in name.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def option_fields(check_type: str) -> list[OptionField]:
    """The inputs of one check type's options, in the model's order."""
    kind = CHECK_TYPES.get(check_type)
    if kind is None:
        return []
    fields = []
    model_fields = kind.options_model.model_fields
    # Type-specific settings first, transport security after.
    names = sorted(model_fields, key=lambda n: (n.startswith(("security_", "sasl_", "ssl_")),
                                                list(model_fields).index(n)))
    for name in names:
        info = model_fields[name]
        annotation = _unwrap_optional(info.annotation)
        origin = typing.get_origin(annotation)
        # A required option has no default to show: the input starts empty.
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        entry = OptionField(name=name, label=_label(name), kind="text",
                            default=default, required=info.is_required(), help=HELP.get(name, ""))
        if annotation is bool:
            entry.kind = "checkbox"
        elif annotation in (int, float):
            entry.kind = "number"
            entry.step = "1" if annotation is int else "any"
        elif origin is Literal:
            entry.kind = "select"
            entry.choices = [str(c) for c in typing.get_args(annotation)]
        elif origin is dict:
            entry.kind = "lines"
        elif origin is list:
            entry.kind = "list"
        elif name in SECRET_OPTIONS:
            entry.kind = "password"
        elif name in _TEXTAREAS:
            entry.kind = "textarea"
        fields.append(entry)
    return fields


def display_value(entry: OptionField, options: dict) -> str | bool:
    """What an input shows for the stored options (the default when unset)."""
    value = options.get(entry.name, entry.default)
    if entry.kind == "checkbox":
        return bool(value)
    if entry.name in SECRET_OPTIONS or value is None:
        return ""
    if entry.kind == "lines":
        return "\n".join(f"{k}: {v}" for k, v in (value or {}).items())
    if entry.kind == "list":
        return ", ".join(str(v) for v in value or [])
    return str(value)


def parse_options(check_type: str, form, *, stored: dict | None = None) -> tuple[dict, dict[str, str]]:
    """Options from posted form data; returns (options, errors by option name).

    A blank input leaves the option unset (its default applies); a blank
    secret keeps the ``stored`` one.
    """
    options: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for entry in option_fields(check_type):
        if entry.kind == "checkbox":
            options[entry.name] = form.get(entry.input_name) in ("on", "true", "1", "y")
            continue
        raw = (form.get(entry.input_name) or "").strip()
        if not raw:
            if entry.name in SECRET_OPTIONS and stored and stored.get(entry.name):
                options[entry.name] = stored[entry.name]
            continue
        if entry.kind == "lines":
            parsed = {}
            for line in raw.splitlines():
                if not line.strip():
                    continue
                name, sep, value = line.partition(":")
                if not sep or not name.strip():
                    errors[entry.name] = f"each line must be 'Name: value' (got {line.strip()!r})"
                    break
                parsed[name.strip()] = value.strip()
            options[entry.name] = parsed
        elif entry.kind == "list":
            options[entry.name] = [item for item in raw.replace(",", " ").split() if item]
        else:
            options[entry.name] = raw
    return options, errors


TOP_LEVEL = ("name", "checkType", "target", "port", "intervalSeconds", "timeoutSeconds",
             "failureThreshold", "successThreshold", "group", "consensusRule", "certExpiryDays")


def endpoint_input(form, *, stored_options: dict | None = None) -> tuple[dict, dict[str, str]]:
    """The service's input from the posted form, and errors found on the way."""
    data: dict[str, Any] = {}
    for name in TOP_LEVEL:
        raw = (form.get(name) or "").strip()
        if raw:
            data[name] = raw
        elif name == "group":
            data[name] = None
    data["alertOnPartial"] = form.get("alertOnPartial") == "on"
    check_type = data.get("checkType", "")
    options, option_errors = parse_options(check_type, form, stored=stored_options)
    data["options"] = options
    return data, {f"options.{k}": v for k, v in option_errors.items()}


# What the form calls each top-level field, to name it in its messages.
LABELS = {"name": "Name", "checkType": "Check type", "target": "Target", "port": "Port",
          "intervalSeconds": "Interval", "timeoutSeconds": "Timeout", "failureThreshold": "Failures before down",
          "successThreshold": "Successes before up", "group": "Group", "consensusRule": "The consensus rule",
          "certExpiryDays": "Certificate alert", "notificationServiceIds": "Notify through"}


def errors_by_field(errors: dict[str, str]) -> dict[str, str]:
    """Service error keys mapped onto form inputs, each message a sentence
    that names its field (``Topic is required``).

    ``options.headers.X`` or ``options.partitions.0`` belong to the
    ``opt_headers`` / ``opt_partitions`` input; an options error without a
    field (one that involves several) is shown above the options.
    """
    mapped: dict[str, str] = {}
    for key, message in errors.items():
        if key.startswith("options."):
            parts = key.split(".")
            name = parts[1] if len(parts) > 1 else ""
            target, label = (OPTION_PREFIX + name, _label(name)) if name else ("options", "")
        else:
            target, label = key, LABELS.get(key, "")
        mapped.setdefault(target, sentence(label, message))
    return mapped
