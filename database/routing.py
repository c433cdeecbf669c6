"""The route class every router uses: JSON request bodies parsed by orjson, within a size cap.

Parsing and validating JSON holds the interpreter lock for the whole document (in a thread as
much as on the event loop), so a large body of many small values would stall every other
request. Bodies the framework parses are capped (`ASSAY_MAX_JSON_BYTES`, 2 MB by default, well
under a quarter second of work); imports read their own bodies, item by item, and have their own
limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.routing import APIRoute

from utils.config import get_settings

# orjson reads integers beyond 64 bits as floats, losing digits: such bodies (any run of 19
# digits, in a string or not) go to the standard library, which keeps them exact.
_LONG_NUMBER = re.compile(rb"\d{19}")


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
            self._json = json.loads(body) if _LONG_NUMBER.search(body) else _loads(body)
        return self._json


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # The standard library's answer, for the same error messages and positions (and the
        # text it accepts that orjson refuses, such as lone surrogates).
        return json.loads(body)


class CappedJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def capped(request: Request) -> Response:
            return await handle(_CappedJsonRequest(request.scope, request.receive))

        return capped


def api_router(**options: Any) -> APIRouter:
    """An `APIRouter` whose routes parse JSON bodies through the cap."""
    return APIRouter(route_class=CappedJsonRoute, **options)
