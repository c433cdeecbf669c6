"""Where a field at fault was sent, named as request validation names it: `body.name`,
`query.cursor`, `header.Idempotency-Key`. The service's own checks name a field by itself
(they serve more than one route); the route's API document says where the request carries
it. A name the request does not carry (a line of an imported file, a column) is left as is."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import Request

PLACES = ("body", "query", "path", "header", "cookie")
_NAME = re.compile(r"[A-Za-z_][\w-]*(?:\.[\w-]+)*")


def located(request: Request, errors: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    places = _places_of_route(request)
    if not places:
        return list(errors)
    out: list[Mapping[str, Any]] = []
    for error in errors:
        field = error.get("field")
        place = _place(places, field) if isinstance(field, str) else None
        out.append({**error, "field": f"{place}.{field}"} if place else error)
    return out


def _place(places: Mapping[str, str], field: str) -> str | None:
    if not _NAME.fullmatch(field) or field.split(".", 1)[0] in PLACES:
        return None
    first = field.split(".", 1)[0]
    return places.get(first) or places.get(first.lower())


def _places_of_route(request: Request) -> Mapping[str, str]:
    """Each name the route's request carries, with where: parameters by their `in`, and the
    properties of a JSON or form body."""
    route = request.scope.get("route")
    path = getattr(route, "path_format", None)
    if path is None:
        return {}
    key = (path, request.method.lower())
    cache: dict[tuple[str, str], Mapping[str, str]] | None = getattr(
        request.app.state, "error_field_places", None
    )
    if cache is None:
        cache = request.app.state.error_field_places = {}
    if key not in cache:
        document = request.app.openapi()
        operation = document.get("paths", {}).get(path, {}).get(key[1], {})
        cache[key] = _operation_places(document, operation)
    return cache[key]


def _operation_places(document: Mapping[str, Any], operation: Mapping[str, Any]) -> dict[str, str]:
    places: dict[str, str] = {}
    for content in (operation.get("requestBody") or {}).get("content", {}).values():
        for name in _properties(document, content.get("schema") or {}, depth=0):
            places.setdefault(name, "body")
    for parameter in operation.get("parameters", []):
        name, where = parameter.get("name"), parameter.get("in")
        if name and where:
            places[name.lower() if where == "header" else name] = where
    return places


def _properties(document: Mapping[str, Any], schema: Mapping[str, Any], *, depth: int) -> set[str]:
    if depth > 8:
        return set()
    if ref := schema.get("$ref"):
        schema = document.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[-1], {})
    names = set(schema.get("properties", {}))
    for key in ("anyOf", "oneOf", "allOf"):
        for member in schema.get(key, []):
            names |= _properties(document, member, depth=depth + 1)
    return names
