"""The product's words for invalid input, in one place.

Validation is done by pydantic models (an endpoint, its check type's
options, a notification service and its settings); this module turns
pydantic's errors into one message per bad field, written the way this
product speaks ("must be a whole number", "must be between 5 and 86400
seconds"). The JSON API shows them under the field's name, the forms next
to the field, the command line after the field's name: the same words
everywhere.

A message is a predicate ("must be ...", "is required"), so a form can put
the field's label in front of it. Messages never repeat text the client
sent, which may be a secret; a number sent as text is the one exception
("send 60 without quotes").
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel, ValidationError

# Units of a number field, from the end of its name (snake or camel case).
_UNITS = (("seconds", "seconds"), ("minutes", "minutes"), ("days", "days"), ("percent", "%"),
          ("bytes", "bytes"))

# Words for the types pydantic names in a union's error location.
_TYPE_WORDS = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false",
               "list": "a list", "dict": "an object"}

INTEGER_TYPES = frozenset({"int_type", "int_parsing", "int_from_float", "int_parsing_size"})
NUMBER_TYPES = frozenset({"float_type", "float_parsing", "finite_number"})
BOUND_TYPES = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})
_TYPE_ERRORS = INTEGER_TYPES | NUMBER_TYPES | {"string_type", "bool_type", "list_type", "dict_type"}

REQUIRED = "is required"
UNKNOWN_FIELD = "is not a known field"


def messages_of(exc: ValidationError, model: type[BaseModel], *, prefix: str = "",
                unknown_field: str = UNKNOWN_FIELD) -> dict[str, str]:
    """One product message per bad field of ``model``, keyed by the field's
    name as sent (dotted for nested ones, after ``prefix``); an error of the
    whole model is keyed by ``prefix`` without its dot, or ``body``."""
    errors: dict[str, str] = {}
    # A value that fits none of a union's types: one message naming them all.
    union_types: dict[str, list[str]] = {}
    for error in exc.errors():
        loc, tags = _without_union_tags(error["loc"])
        key = prefix + ".".join(str(part) for part in loc) if loc else (prefix.rstrip(".") or "body")
        if tags and error["type"] in _TYPE_ERRORS:
            union_types.setdefault(key, []).extend(tags)
            errors[key] = "must be " + " or ".join(_TYPE_WORDS.get(t, t) for t in union_types[key])
            continue
        if key in errors:
            continue  # the first problem of a field is the one to fix first
        field = _field_of(model, loc[0]) if loc else None
        name = str(loc[0]) if loc else ""
        errors[key] = message_for(error, field if len(loc) == 1 else None, name=name,
                                  unknown_field=unknown_field)
    return errors


def message_for(error: dict, field: Any = None, *, name: str = "", unknown_field: str = UNKNOWN_FIELD) -> str:
    """The message for one pydantic error (an item of ``ValidationError.errors()``).

    ``field`` (the model's ``FieldInfo``) supplies both bounds of a range
    and its unit, so a number out of range is told the whole range.
    """
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"])).removeprefix("Value error, ")
    if kind == "missing":
        return REQUIRED
    if kind == "extra_forbidden":
        return unknown_field
    if kind in INTEGER_TYPES:
        return _number_message("a whole number", given, field, name)
    if kind in NUMBER_TYPES:
        return _number_message("a number", given, field, name)
    if kind in BOUND_TYPES:
        return _range(field, name) or _one_bound(kind, ctx, _unit(name))
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false" + (", not a number" if _is_number(given) else "")
    if kind == "string_type":
        return "must be text"
    if kind == "string_too_short":
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"must be at least {least} characters"
    if kind == "string_too_long":
        length = f" (it has {len(given)})" if isinstance(given, str) else ""
        return f"must be at most {ctx.get('max_length')} characters{length}"
    if kind == "string_pattern_mismatch":
        return "has characters that are not allowed here"
    if kind in ("literal_error", "enum"):
        return "must be one of " + str(ctx.get("expected", "")).replace("'", "")
    if kind == "list_type":
        return "must be a list"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be an object of names and values"
    if kind == "too_short":
        return f"must have at least {_items(ctx.get('min_length', 1))}"
    if kind == "too_long":
        return f"must have at most {_items(ctx.get('max_length'))}"
    if kind in ("datetime_type", "datetime_parsing", "datetime_from_date_parsing"):
        return "must be a time in ISO 8601 with a zone, such as 2026-01-31T12:00:00Z"
    return "is not valid here"


def _number_message(what: str, given: Any, field: Any, name: str) -> str:
    if isinstance(given, bool):
        return f"must be {what}, not true or false"
    if isinstance(given, str) and _looks_numeric(given):
        # A JSON client sent "60" where 60 belongs: say exactly what to change.
        return f"must be {what}, not text: send {given.strip()} without quotes"
    bounds = _bounds(field) if field is not None else {}
    if what == "a whole number" and isinstance(given, float) and given.is_integer():
        return f"must be {what}: send {int(given)}"
    if "ge" in bounds and "le" in bounds:
        return f"must be {what} between {_num(bounds['ge'])} and {_num(bounds['le'])}{_unit(name)}"
    return f"must be {what}"


def _range(field: Any, name: str) -> str | None:
    """``must be between 5 and 86400 seconds`` from a field's bounds (None without any)."""
    bounds, unit = _bounds(field), _unit(name)
    low = (f"at least {_num(bounds['ge'])}" if "ge" in bounds
           else f"more than {_num(bounds['gt'])}" if "gt" in bounds else None)
    high = (f"at most {_num(bounds['le'])}" if "le" in bounds
            else f"less than {_num(bounds['lt'])}" if "lt" in bounds else None)
    if "ge" in bounds and "le" in bounds:
        return f"must be between {_num(bounds['ge'])} and {_num(bounds['le'])}{unit}"
    if low is None and high is None:
        return None
    return "must be " + " and ".join(part for part in (low, high) if part) + unit


def _one_bound(kind: str, ctx: dict, unit: str) -> str:
    words = {"greater_than": ("more than", "gt"), "greater_than_equal": ("at least", "ge"),
             "less_than": ("less than", "lt"), "less_than_equal": ("at most", "le")}[kind]
    return f"must be {words[0]} {_num(ctx.get(words[1]))}{unit}"


def _bounds(field: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in getattr(field, "metadata", ()):
        for cls, key in ((Ge, "ge"), (Gt, "gt"), (Le, "le"), (Lt, "lt"), (MinLen, "min_length"),
                         (MaxLen, "max_length")):
            if isinstance(item, cls):
                found[key] = getattr(item, key)
    return found


def _unit(name: str) -> str:
    lowered = name.lower()
    return next((f" {unit}" for suffix, unit in _UNITS if lowered.endswith(suffix)), "")


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _items(count: Any) -> str:
    return f"{count} item" + ("" if count == 1 else "s")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _looks_numeric(text: str) -> bool:
    return bool(re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", text))


def _without_union_tags(loc: tuple) -> tuple[tuple, list[str]]:
    """The location without the member names pydantic adds inside a union
    (``('expected_status_codes', 0, 'int')``), and those names."""
    kept, tags = [], []
    for position, part in enumerate(loc):
        if position > 0 and isinstance(part, str) and (part in _TYPE_WORDS or "[" in part):
            tags.append(part.split("[", 1)[0])
        else:
            kept.append(part)
    return tuple(kept), tags


def _field_of(model: type[BaseModel], name: Any) -> Any:
    fields = model.model_fields
    if name in fields:
        return fields[name]
    return next((info for info in fields.values() if info.alias == name), None)


def choice_error(value: str, allowed: Iterable[str]) -> str | None:
    """``must be one of ...`` unless ``value`` is one of ``allowed`` (any case)."""
    allowed = list(allowed)
    if value.upper() in (a.upper() for a in allowed):
        return None
    return "must be one of " + ", ".join(allowed)


def whole_number_error(value: str, low: int, high: int) -> str | None:
    """``must be a whole number between low and high`` unless ``value`` is one."""
    text = value.strip()
    if re.fullmatch(r"-?\d{1,12}", text) and low <= int(text) <= high:
        return None
    return f"must be a whole number between {low} and {high}"


def sentence(field_label: str, message: str) -> str:
    """A message as a form shows it beside its field: ``Name must be ...``.

    A message that does not start as a predicate (a check's own wording,
    such as ``'abc' is not a status code``) is shown as it is, capitalised.
    """
    first = message.split(" ", 1)[0]
    if field_label and first in _PREDICATE_STARTS:
        return f"{field_label} {message}"
    if "_" in first:
        return message  # starts with an option's name: keep its spelling
    return message[:1].upper() + message[1:]


_PREDICATE_STARTS = frozenset({"is", "must", "has", "names", "needs", "cannot", "may", "was"})

__all__ = ["REQUIRED", "UNKNOWN_FIELD", "choice_error", "message_for", "messages_of", "sentence",
           "whole_number_error"]
