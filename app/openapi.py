"""The OpenAPI documents, completed from the routes themselves.

A route names the error statuses its own logic returns (`utils.problems.errors`); the ones
that follow from its shape are added here, once for every route: 401 when it reads a
credential, 403 when it needs more than the viewer role, 404 for an id in its path, 400 and
422 for its input, 413 for a body past the limit (any operation's), 429 for a rate limit.
Every error response is `application/problem+json` with the one `Problem` schema (the
validation 422 included: it is what the service sends), and every request body shows the
example its schema carries, as its model wrote it (FastAPI's document leaves out every null,
in examples too: `"actor_api_key_id": None` would go, and the example would then fail its
own schema).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.utils import (
    get_fields_from_routes,
    get_flat_models_from_fields,
    get_model_name_map,
    get_openapi,
)
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from database import deps
from database.routing import CappedJsonRoute
from utils.auth import Role
from utils.problems import ERROR_DESCRIPTIONS, PROBLEM_JSON, Problem

REF = "#/components/schemas/{model}"
PROBLEM_REF = {"$ref": REF.format(model="Problem")}
ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    503: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
}
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
_UNUSED = ("HTTPValidationError", "ValidationError")
# The keywords of a schema whose keys are names (of properties, of definitions), not keywords.
_NAMED = ("properties", "patternProperties", "$defs", "dependentSchemas")
# A model's schemas, by the suffix of their names: FastAPI names the two apart when a model's
# input and output schemas differ.
_SCHEMA_MODES: tuple[tuple[str, JsonSchemaMode], ...] = (
    ("", "validation"),
    ("-Input", "validation"),
    ("-Output", "serialization"),
)

TAGS = [
    {"name": "auth", "description": "Accounts, logins, token refresh and organization switch."},
    {"name": "users", "description": "Your own account."},
    {
        "name": "organizations",
        "description": "The organization your credential acts in: members, roles, API keys.",
    },
    {
        "name": "projects",
        "description": "Projects hold tests, test sets, prompts, models, metrics and runs.",
    },
    {"name": "tests", "description": "Test cases: an input, an expected output, context, labels."},
    {
        "name": "test sets",
        "description": "Ordered sets of tests, immutable published versions, import and export.",
    },
    {"name": "prompts", "description": "Jinja2 prompt templates with versions and labels."},
    {
        "name": "models",
        "description": "Model configurations: targets to test and judges that score.",
    },
    {"name": "metrics", "description": "What a result is scored by: checks and LLM judges."},
    {
        "name": "runs",
        "description": "Runs, their results, summaries, comparisons, gates and exports.",
    },
    {"name": "health", "description": "Is the service up, its database reachable and migrated?"},
    {"name": "streams", "description": "Live Server-Sent Events of a run, and its live page."},
]


def install_openapi(
    app: FastAPI, *, description: str = "", schemas: Sequence[type[BaseModel]] = ()
) -> None:
    """Serve `app`'s document completed as above, with `schemas` among its components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=description or app.description,
                routes=app.routes,
                webhooks=app.webhooks.routes,
                tags=[tag for tag in TAGS if _tag_used(app, tag["name"])],
            )
            complete(document, _api_routes(app), schemas)
            _complete_webhooks(document, app.webhooks.routes)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(
    document: dict[str, Any], routes: Sequence[Any], schemas: Sequence[type[BaseModel]] = ()
) -> None:
    """`routes`: the app's API routes as they were included (prefixes and tags applied)."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    models: list[type[BaseModel]] = [Problem, *schemas]
    _, extra = models_json_schema([(model, "validation") for model in models], ref_template=REF)
    components.update(extra.get("$defs", {}))
    _restore_examples(components, routes)
    credentials: list[dict[str, list[str]]] = [
        {scheme.scheme_name: []} for scheme in deps.CREDENTIAL_SCHEMES
    ]
    for route in routes:
        if not route.include_in_schema:
            continue
        reads_credential = _reads_credential(list(_calls(route.dependant)))
        for method in route.methods:
            operation = document["paths"][route.path_format][method.lower()]
            if reads_credential:
                # Read by `read_credential` itself, not through `Security` dependencies: the
                # schemes are declared here, as FastAPI declares those.
                operation["security"] = credentials
                _declare_schemes(document)
            _document_errors(operation, _implied_errors(route, operation))
            _show_body_examples(operation, components)
    for name in _UNUSED:
        components.pop(name, None)


def _complete_webhooks(document: dict[str, Any], webhooks: Sequence[Any]) -> None:
    """The messages the app sends (`app.webhooks`): each body's example shown, as its model
    wrote it, as for an operation's."""
    components = document["components"]["schemas"]
    _restore_examples(components, webhooks)
    for item in document.get("webhooks", {}).values():
        for operation in item.values():
            _show_body_examples(operation, components)


def _restore_examples(components: dict[str, Any], routes: Sequence[Any]) -> None:
    """Each schema's examples as its model wrote them, nulls included, where they hold one
    (`get_openapi` drops every None from the document): its models named as it names them."""
    fields = get_fields_from_routes(list(routes))
    models = get_flat_models_from_fields(fields, known_models=set())
    names = get_model_name_map(models)
    for model in models:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or not _nulls(model):
            continue
        for suffix, mode in _SCHEMA_MODES:
            if names[model] + suffix in components:
                written = model.model_json_schema(ref_template=REF, mode=mode)
                _copy_examples(written, components[names[model] + suffix])


def _nulls(model: type[BaseModel]) -> bool:
    """Whether the model's schema may hold a null that the document would drop: in an example
    (or in extra schema of its own, which may be a function)."""
    extras: list[Any] = [model.model_config.get("json_schema_extra")]
    for field in model.model_fields.values():
        extras += [field.examples, field.json_schema_extra]
    return any(callable(extra) or _holds_none(extra) for extra in extras)


def _holds_none(value: Any) -> bool:
    if isinstance(value, dict):
        return any(item is None or _holds_none(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_none(item) for item in value)
    return False


def _copy_examples(written: Any, schema: Any) -> None:
    """`written`'s examples into `schema`, the same schema less its nulls, at every depth."""
    if isinstance(written, list) and isinstance(schema, list) and len(written) == len(schema):
        for written_item, item in zip(written, schema, strict=True):
            _copy_examples(written_item, item)
    if not (isinstance(written, dict) and isinstance(schema, dict)):
        return
    for key, value in written.items():
        if key in _NAMED and isinstance(value, dict):  # names, not keywords
            for name, named in value.items():
                _copy_examples(named, (schema.get(key) or {}).get(name))
        elif key in ("examples", "example"):
            schema[key] = jsonable_encoder(value)
        else:
            _copy_examples(value, schema.get(key))


def _reads_credential(calls: list[Any]) -> bool:
    return any(reader in calls for reader in deps.CREDENTIAL_READERS)


def _implied_errors(route: Any, operation: dict[str, Any]) -> set[int]:
    calls = list(_calls(route.dependant))
    body = operation.get("requestBody", {}).get("content", {})
    implied: set[int] = set()
    if _reads_credential(calls):
        implied.add(401)
    if any(isinstance(c, deps.RoleCheck) and c.role is not Role.viewer for c in calls):
        implied.add(403)
    if "{" in route.path_format:
        implied.add(404)
    if operation.get("parameters") or body or _refuses_unknown_query(route.original_route):
        implied.add(422)
    implied.add(413)  # the body-size limit stands before routing: a GET's body is held to it
    if route.body_field is not None and _PARSED.intersection(body):
        implied.add(400)  # a body that is not JSON, or a form that cannot be read, at all
    if deps.auth_rate_limit in calls:
        implied.add(429)
    if deps.TRANSACTION in calls and route.methods & _WRITES:
        implied.add(409)  # undone by a concurrent change, or what it names deleted meanwhile
    if any(opener in calls for opener in deps.POOLED):
        implied.add(503)  # no pooled connection came free in time
    return implied


# Bodies FastAPI parses itself, answering 400 to one it cannot (a form's missing boundary).
_PARSED = frozenset(
    {"application/json", "application/x-www-form-urlencoded", "multipart/form-data"}
)


def _refuses_unknown_query(route: Any) -> bool:
    return isinstance(route, CappedJsonRoute) and route.refuses_unknown_query


def _declare_schemes(document: dict[str, Any]) -> None:
    schemes = document["components"].setdefault("securitySchemes", {})
    if not schemes:
        for scheme in deps.CREDENTIAL_SCHEMES:
            schemes[scheme.scheme_name] = scheme.model.model_dump(
                mode="json", by_alias=True, exclude_none=True
            )


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _document_errors(operation: dict[str, Any], implied: set[int]) -> None:
    responses = operation.setdefault("responses", {})
    declared = {int(code) for code in responses if code[0] in "45"}
    for status in sorted(declared | implied):
        response = responses.setdefault(str(status), {})
        if status >= 500 and "content" in response:  # a health check's own report
            continue
        if status == 422 or not response.get("description"):
            response["description"] = ERROR_DESCRIPTIONS[status]
        response["content"] = {PROBLEM_JSON: {"schema": PROBLEM_REF}}
        if status in ERROR_HEADERS:
            response["headers"] = ERROR_HEADERS[status]
    operation["responses"] = dict(sorted(responses.items()))


def _show_body_examples(operation: dict[str, Any], components: dict[str, Any]) -> None:
    for media in operation.get("requestBody", {}).get("content", {}).values():
        if "example" in media or "examples" in media:
            continue
        schema = media.get("schema", {})
        for option in (schema, *schema.get("anyOf", ())):  # an optional body: [model, null]
            ref = option.get("$ref", "")
            found = components.get(ref.rsplit("/", 1)[-1], {}) if ref else option
            if found.get("examples"):
                media["example"] = found["examples"][0]
                break


def _api_routes(app: FastAPI) -> list[Any]:
    return [
        route
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute)
    ]


def _tag_used(app: FastAPI, name: str) -> bool:
    return any(route.include_in_schema and name in route.tags for route in _api_routes(app))
