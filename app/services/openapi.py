"""OpenAPI 3.1 descriptions built from code.

Each API keeps a ``Description``: a registry of its operations, keyed by
the Flask endpoint and HTTP method that serve them, each naming the pydantic
models of its query, body and answers. The document is built by walking the
app's URL map, so a path and its parameters come from the routes
themselves, and schemas from the same models that validate requests
(``model_json_schema`` by alias, under ``components/schemas``). A route the
registry does not describe is left out of the document and listed by
``Description.undescribed``, which a test keeps empty.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{model}"
# Flask's converters as JSON Schema: ``<int:id>`` matches digits only.
_CONVERTERS = {"int": {"type": "integer", "minimum": 0}, "default": {"type": "string"},
               "string": {"type": "string"}}
_RULE_PART = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
# What each error status means, for every operation that can answer it.
ERROR_MEANINGS = {
    400: "Invalid input: `fields` names each bad field",
    401: "Missing or wrong credentials",
    403: "The credentials may not do this",
    404: "No such resource",
    409: "Refused in the instance's current state",
    413: "The body is larger than 1 MiB",
    415: "The body was not sent as application/json",
    429: "Too many failed attempts from this address",
    503: "Not available on this instance",
}


class Answer(BaseModel):
    """Base of the models that describe what an API answers (camelCase)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ErrorAnswer(Answer):
    """Every error the APIs answer: a code, a sentence, and the bad fields."""

    error: str
    message: str
    fields: dict[str, str] | None = None
    # Sync API refusals say whom to follow instead.
    primary_url: str | None = None
    epoch: int | None = None


@dataclass(frozen=True)
class Patch:
    """The body of a PATCH: ``model`` with no field required."""

    model: type[BaseModel]


@dataclass(frozen=True)
class Operation:
    """One route and method: what it takes and what it answers.

    ``answers`` maps each success status to its model (None: no body);
    ``errors`` lists the error statuses it can answer, each with
    ``ErrorAnswer``. ``query`` is a model whose fields are the query
    parameters; ``headers`` maps request header names to their schemas,
    ``answer_headers`` the headers of its success answers to OpenAPI
    header objects (``{"required": ..., "schema": ...}``). ``body_types``
    and ``answer_types`` add media types (to their schemas) beside
    ``application/json``; ``error_answers`` replaces the meaning, model or
    headers of an error status (``ErrorAnswer`` and ``ERROR_MEANINGS`` otherwise).
    """

    summary: str
    answers: dict[int, type[BaseModel] | dict | None]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | Patch | None = None
    query: type[BaseModel] | None = None
    headers: dict[str, dict] = field(default_factory=dict)
    answer_headers: dict[str, dict] = field(default_factory=dict)
    security: tuple[tuple[str, ...], ...] | None = None
    tag: str | None = None
    description: str | None = None
    body_types: dict[str, dict] = field(default_factory=dict)
    answer_types: dict[str, dict] = field(default_factory=dict)
    error_answers: dict[int, "ErrorCase"] = field(default_factory=dict)


@dataclass(frozen=True)
class ErrorCase:
    """An error status an operation answers otherwise than most: its
    meaning, its model and its headers."""

    meaning: str
    model: type[BaseModel] = ErrorAnswer
    headers: dict[str, dict] = field(default_factory=dict)


class Description:
    """The registry of one API's operations, and its document."""

    def __init__(self, title: str, blueprint: str, *, description: str = "",
                 security_schemes: dict | None = None, security: tuple[tuple[str, ...], ...] = ()):
        self.title = title
        self.blueprint = blueprint
        self.description = description
        self.security_schemes = security_schemes or {}
        self.security = security
        self.operations: dict[tuple[str, str], Operation] = {}

    def describe(self, view: str, method: str, operation: Operation) -> None:
        """Register ``operation`` for the view ``view`` (without the blueprint) and ``method``."""
        self.operations[(f"{self.blueprint}.{view}", method.upper())] = operation

    def routes(self, app) -> list[tuple[Any, str]]:
        """(rule, method) of every route the blueprint serves in ``app``."""
        found = []
        for rule in app.url_map.iter_rules():
            if rule.endpoint.startswith(f"{self.blueprint}."):
                found += [(rule, method) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
        return found

    def undescribed(self, app) -> list[str]:
        """``METHOD /path`` of each route the registry does not describe."""
        return [f"{method} {rule.rule}" for rule, method in self.routes(app)
                if (rule.endpoint, method) not in self.operations]

    def document(self, app, version: str) -> dict:
        """The OpenAPI document of the operations ``app`` serves."""
        schemas: dict[str, dict] = {}
        _ref(ErrorAnswer, schemas, mode="serialization")
        paths: dict[str, dict] = {}
        for rule, method in self.routes(app):
            operation = self.operations.get((rule.endpoint, method))
            if operation is None:
                continue
            path, parameters = _path_of(rule.rule)
            paths.setdefault(path, {})[method.lower()] = self._operation(
                rule.endpoint, operation, parameters, schemas)
        document = {
            "openapi": OPENAPI_VERSION,
            "info": {"title": self.title, "version": version, "description": self.description},
            "paths": paths,
            "components": {"schemas": dict(sorted(schemas.items())), "securitySchemes": self.security_schemes},
        }
        if self.security:
            document["security"] = [{name: [] for name in option} for option in self.security]
        return document

    def _operation(self, endpoint: str, operation: Operation, parameters: list[dict], schemas: dict) -> dict:
        out: dict[str, Any] = {"operationId": endpoint.split(".", 1)[1], "summary": operation.summary}
        if operation.description:
            out["description"] = operation.description
        if operation.tag:
            out["tags"] = [operation.tag]
        parameters = list(parameters)
        if operation.query is not None:
            parameters += _query_parameters(operation.query, schemas)
        parameters += [{"name": name, "in": "header", "required": False, "schema": schema}
                       for name, schema in operation.headers.items()]
        if parameters:
            out["parameters"] = parameters
        if operation.body is not None:
            schema = _patch_ref(operation.body.model, schemas) if isinstance(operation.body, Patch) \
                else _ref(operation.body, schemas)
            out["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema},
                                                                **_media(operation.body_types)}}
        responses: dict[str, dict] = {}
        for status, model in operation.answers.items():
            answer: dict[str, Any] = {"description": _status_text(status)}
            if operation.answer_headers:
                answer["headers"] = dict(operation.answer_headers)
            if model is not None:
                schema = model if isinstance(model, dict) else _ref(model, schemas, mode="serialization")
                answer["content"] = {"application/json": {"schema": schema}, **_media(operation.answer_types)}
            responses[str(status)] = answer
        for status in operation.errors:
            case = operation.error_answers.get(status) or ErrorCase(ERROR_MEANINGS.get(status, _status_text(status)))
            responses[str(status)] = {
                "description": case.meaning,
                "content": {"application/json": {"schema": _ref(case.model, schemas, mode="serialization")}},
            }
            if case.headers:
                responses[str(status)]["headers"] = dict(case.headers)
        out["responses"] = dict(sorted(responses.items()))
        if operation.security is not None:
            out["security"] = [{name: [] for name in option} for option in operation.security]
        return out


def _media(types: dict[str, dict]) -> dict:
    """OpenAPI content entries of media types and their schemas."""
    return {media_type: {"schema": schema} for media_type, schema in types.items()}


def _status_text(status: int) -> str:
    from http import HTTPStatus

    return HTTPStatus(status).phrase


def _path_of(rule: str) -> tuple[str, list[dict]]:
    """An OpenAPI path template and its path parameters from a Flask rule."""
    parameters = []

    def template(match: re.Match) -> str:
        converter = match["converter"] or "default"
        parameters.append({"name": match["name"], "in": "path", "required": True,
                           "schema": dict(_CONVERTERS.get(converter, {"type": "string"}))})
        return "{" + match["name"] + "}"

    return _RULE_PART.sub(template, rule), parameters


def _schema_of(model: type[BaseModel], schemas: dict, mode: str = "validation") -> dict:
    """``model``'s JSON Schema by alias; the models it nests go into ``schemas``."""
    schema = model.model_json_schema(by_alias=True, ref_template=REF_TEMPLATE, mode=mode)
    for name, nested in schema.pop("$defs", {}).items():
        schemas.setdefault(name, nested)
    return schema


def _ref(model: type[BaseModel], schemas: dict, mode: str = "validation") -> dict:
    """A ``$ref`` to ``model``'s schema, adding it to ``schemas``."""
    name = model.__name__
    if name not in schemas:
        schemas[name] = {}  # claimed first: a model may nest itself
        schemas[name] = _schema_of(model, schemas, mode)
    return {"$ref": REF_TEMPLATE.format(model=name)}


def _query_parameters(model: type[BaseModel], schemas: dict) -> list[dict]:
    """One optional query parameter per field of ``model``."""
    schema = _schema_of(model, schemas)
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        prop = _without_null(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        parameter = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _patch_ref(model: type[BaseModel], schemas: dict) -> dict:
    """A ``$ref`` to ``model``'s schema with no field required (``<Model>Patch``)."""
    name = f"{model.__name__}Patch"
    if name not in schemas:
        schema = _schema_of(model, schemas)
        schema.pop("required", None)
        schemas[name] = {**schema, "title": name}
    return {"$ref": REF_TEMPLATE.format(model=name)}


def _without_null(schema: dict) -> dict:
    """A query parameter's schema without ``null``: a parameter is sent or not."""
    schema = dict(schema)
    options = [option for option in schema.pop("anyOf", []) if option != {"type": "null"}]
    if len(options) == 1:
        schema = {**options[0], **schema}
    elif options:
        schema["anyOf"] = options
    if schema.get("default", ...) is None:
        del schema["default"]
    return schema
