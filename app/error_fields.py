"""Where a field at fault was sent, named as request validation names it: `body.name`,
`query.cursor`, `header.Idempotency-Key`. The service's own checks name a field by itself
(they serve more than one route); the route's parameters and body model say where the
request carries it. A name the request does not carry (a line of an imported file, a stored
prompt's template) is left as is."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, get_args

from fastapi import Request
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from pydantic import BaseModel

PLACES = ("body", "query", "path", "header", "cookie")
_NAME = re.compile(r"[A-Za-z_][\w-]*(?:\.[\w-]+)*")
_CACHED = "_assay_field_places"


def located(request: Request, errors: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    route = request.scope.get("route")
    places = _places(route) if isinstance(route, APIRoute) else {}
    if not places:
        return list(errors)
    out: list[Mapping[str, Any]] = []
    for error in errors:
        field = error.get("field")
        place = _place(places, field) if isinstance(field, str) else None
        out.append({**error, "field": f"{place}.{field}"} if place else error)
    return out


def _place(places: Mapping[str, str], field: str) -> str | None:
    first = field.split(".", 1)[0]
    if not _NAME.fullmatch(field) or first in PLACES:
        return None
    return places.get(first) or places.get(first.lower())


def _places(route: APIRoute) -> Mapping[str, str]:
    """Each name the route's request carries, with where: its parameters (a header's name in
    lower case), and the fields of its body's model. (Read from the route, once: the API
    document, built on a first error, would hold the loop a second.)"""
    known: Mapping[str, str] | None = getattr(route, _CACHED, None)
    if known is None:
        known = _read_places(route)
        setattr(route, _CACHED, known)
    return known


def _read_places(route: APIRoute) -> dict[str, str]:
    places: dict[str, str] = {}
    body = getattr(route, "body_field", None)
    if body is not None:
        for name in _model_fields(body.field_info.annotation):
            places[name] = "body"
    for parameter in get_flat_params(route.dependant):
        where = parameter.field_info.in_.value  # type: ignore[attr-defined]
        places[parameter.alias.lower() if where == "header" else parameter.alias] = where
    return places


def _model_fields(annotation: Any, depth: int = 0) -> set[str]:
    """The names of a model's fields (as sent), or of each model in a union of them."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {field.alias or name for name, field in annotation.model_fields.items()}
    if depth > 4:
        return set()
    return set().union(*(_model_fields(part, depth + 1) for part in get_args(annotation)))
