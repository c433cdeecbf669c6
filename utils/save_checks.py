"""What saving checks that takes time in proportion to what is saved (a template's compile, a
body's JSON Schemas against their metaschemas) runs in threads of its own: never on the event
loop, and never in the threads that every tenant's template renders share.

A body's JSON Schemas (a model's tools, a test's expected arguments) would be checked by its
validators while the framework parses the body, on the event loop (100 of 20 KB held it 37 s).
A route whose handler checks them here declares `schemas_checked_by_handler`: while its body is
parsed only their nesting and size are (`refuse_oversized_schema`), and its handler checks them
(`check_schemas`) before acting on the body. Elsewhere (an import parsing in its own threads) the
validators check each schema as they always did.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from functools import partial
from typing import Any, TypeVar

from utils import fastjson
from utils.errors import InvalidInput
from utils.json_schemas import check_json_schema, measure_json_schema, refuse_oversized_schema

SAVE_CHECK_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="save-check")
# The schemas one body's check may hold together (identical ones counted once): about half a
# millisecond each, so a body's check takes a few seconds of a save-check thread at most.
MAX_BODY_SUBSCHEMAS = 5_000
_T = TypeVar("_T")
_CHECKED_BY_HANDLER: ContextVar[bool] = ContextVar("schemas_checked_by_handler", default=False)


async def off_loop(call: Callable[[], _T]) -> _T:
    """`call` in a save-check thread."""
    return await asyncio.get_running_loop().run_in_executor(SAVE_CHECK_THREADS, call)


async def schemas_checked_by_handler() -> AsyncIterator[None]:
    """A route's dependency: its body's JSON Schemas are only bounded while it is parsed, and
    checked by its handler (`check_schemas`)."""
    token = _CHECKED_BY_HANDLER.set(True)
    try:
        yield
    finally:
        _CHECKED_BY_HANDLER.reset(token)


def schema_in_body(value: Any) -> Any:
    """For a body's validator: `value` checked as a JSON Schema, or only its nesting and size
    when the route's handler checks it; a ValueError saying what is wrong."""
    if _CHECKED_BY_HANDLER.get():
        refuse_oversized_schema(value)
        return value
    return check_json_schema(value)


async def check_schemas(schemas: Sequence[tuple[str, Any]], *, field: str) -> None:
    """A body's JSON Schemas, each named by its field, checked in a save-check thread: each
    distinct schema once, all of them holding at most MAX_BODY_SUBSCHEMAS (else a 422 naming
    `field`, the list that holds them); a schema's own fault is a 422 naming its field."""
    if schemas:
        await off_loop(partial(_check_all, schemas, field))


def _check_all(schemas: Sequence[tuple[str, Any]], field: str) -> None:
    seen: set[bytes] = set()
    held = 0
    for where, schema in schemas:
        text = fastjson.dumps_bytes(schema)
        if text in seen:
            continue
        seen.add(text)
        try:
            held += measure_json_schema(schema)
            if held > MAX_BODY_SUBSCHEMAS:
                raise InvalidInput(
                    f"the JSON schemas hold at most {MAX_BODY_SUBSCHEMAS:,} schemas together"
                    " (objects and booleans in their places for schemas; identical schemas"
                    " count once)",
                    field=field,
                )
            check_json_schema(schema)
        except ValueError as exc:
            raise InvalidInput(str(exc), field=where) from None
