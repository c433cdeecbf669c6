"""The route class every router uses: JSON request bodies parsed by orjson, within a size cap.

Parsing and validating JSON holds the interpreter lock for the whole document (in a thread as
much as on the event loop), so a large body of many small values would stall every other
request. Bodies the framework parses are capped (`ASSAY_MAX_JSON_BYTES`, 2 MB by default: a
quarter to half a second of work for a body of many small values); imports read their own
bodies, item by item, and have their own limit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

from utils.config import get_settings
from utils.errors import InvalidInput
from utils.schemas import text_problem

# orjson reads integers beyond 64 bits as floats, losing digits: such bodies (any run of 19
# digits, in a string or not) go to the standard library, which keeps them exact.
_LONG_NUMBER = re.compile(rb"\d{19}")
_TOO_LONG = re.compile(r"value has (\d+) digits")


class _CappedJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            limit = get_settings().max_json_bytes
            if len(body) > limit:
                raise HTTPException(
                    413,
                    f"JSON bodies are limited to {limit} bytes; "
                    "import large test sets through the import endpoint",
                )
            self._json = _standard_loads(body) if _LONG_NUMBER.search(body) else _loads(body)
        return self._json


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # The standard library's answer, for the same error messages and positions (and the
        # text it accepts that orjson refuses, such as lone surrogates).
        return _standard_loads(body)


def _standard_loads(body: bytes) -> Any:
    """The standard library's parse, refusing what it takes that is no JSON number (NaN,
    Infinity, a number past a double's range, which would be stored as null) and an integer
    too long to read, as a JSON error naming the reason."""
    try:
        return json.loads(body, parse_constant=_not_a_number, parse_float=_finite)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:
        digits = _TOO_LONG.search(str(exc))
        reason = f"an integer of {digits[1]} digits is longer than can be read" if digits else exc
        raise json.JSONDecodeError(str(reason), body.decode("utf-8", "replace"), 0) from None


def _not_a_number(constant: str) -> float:
    raise ValueError(f"{constant} is not a JSON number")


def _finite(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise ValueError(f"{literal[:40]} is past the range of a number")
    return value


class CappedJsonRoute(APIRoute):
    refuses_unknown_query = True

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        # Text every path this route matches contains: its path up to the first parameter.
        self._literal = self.path_format.split("{", 1)[0]
        self._query_names = (
            frozenset(
                parameter.alias
                for parameter in get_flat_params(self.dependant)
                if parameter.field_info.in_.value == "query"  # type: ignore[attr-defined]
            )
            if self.refuses_unknown_query
            else None
        )

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Refuses at once a path without the route's literal text. The app tries its routes
        in order, a hundred of them, and most are not the one: their full match (the path's
        regex, FastAPI's bookkeeping) cost a few percent of a read's CPU. A test, not a
        prefix match: under an included router's prefix the text is further in."""
        if self._literal not in scope["path"]:
            return Match.NONE, {}
        return super().matches(scope)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def capped(request: Request) -> Response:
            _check_parameters(request, self._query_names)
            return await handle(_CappedJsonRequest(request.scope, request.receive))

        return capped


class ProbeRoute(CappedJsonRoute):
    """A health check's route: it answers whatever query a probe adds (a cache-buster)."""

    refuses_unknown_query = False


def _check_parameters(request: Request, query_names: frozenset[str] | None) -> None:
    """A query parameter the operation does not take (`query_names`; None: any) is refused,
    naming it: ignored, a misspelt filter (`?state=failed` for `?status=failed`) answers as if
    none were given. Path and query values are text the database must store or compare: one
    it cannot (a NUL, a lone surrogate) is refused naming its parameter, as a body's field is,
    rather than by the database, naming nothing."""
    if query_names is not None and request.scope["query_string"]:
        for name in request.query_params:
            if name not in query_names:
                taken = ", ".join(sorted(query_names)) or "none"
                raise InvalidInput(
                    f"is not a parameter of this operation (it takes: {taken})",
                    field=f"query.{name}",
                )
    named = [*request.path_params.items(), *request.query_params.multi_items()]
    for name, value in named:
        if isinstance(value, str) and (problem := text_problem(value)):
            raise InvalidInput(problem, field=name)


def api_router(**options: Any) -> APIRouter:
    """An `APIRouter` whose routes parse JSON bodies through the cap (and, unless another
    `route_class` is given, refuse query parameters they do not take)."""
    return APIRouter(**{"route_class": CappedJsonRoute, **options})


def include_flat(target: APIRouter, router: APIRouter, *, prefix: str = "") -> None:
    """Adds `router`'s operations to `target` as routes of its own, under `prefix`.

    `include_router` keeps an included router as a branch that is matched on every request,
    twice (to select it, then to handle), once more per level of nesting, with bookkeeping at
    each candidate; a route added here is one path regex tried in the app's own list, and
    the OpenAPI document is the same (a route carries its router's prefix, tags, responses
    and dependencies already).
    """
    if router.on_startup or router.on_shutdown:
        raise ValueError("a router with startup or shutdown handlers must be included")
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"{route!r} is not an APIRoute: include its router instead")
        target.add_api_route(
            prefix + route.path,
            route.endpoint,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=list(route.tags),
            dependencies=list(route.dependencies),
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses=dict(route.responses),
            deprecated=route.deprecated,
            methods=set(route.methods or ()),
            operation_id=route.operation_id,
            response_model_include=route.response_model_include,
            response_model_exclude=route.response_model_exclude,
            response_model_by_alias=route.response_model_by_alias,
            response_model_exclude_unset=route.response_model_exclude_unset,
            response_model_exclude_defaults=route.response_model_exclude_defaults,
            response_model_exclude_none=route.response_model_exclude_none,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            route_class_override=type(route),
            callbacks=route.callbacks,
            openapi_extra=route.openapi_extra,
            generate_unique_id_function=route.generate_unique_id_function,
            strict_content_type=route.strict_content_type,
            max_body_size=route.max_body_size,
            form_limits=route.form_limits,
        )
