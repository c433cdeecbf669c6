"""Exports as streamed bodies, in constant memory whatever their size.

The request's own transaction checks what is asked (a 404, a 422) and reads what the first
bytes need; it has ended by the time the body is sent. The rows follow a page at a time, each
page read in a short transaction of its own that acts for the caller (row-level security, as
the request did), so a slow reader holds no connection between pages. Pages are formatted in a
worker thread: a page of large outputs never stalls the event loop. The next page is read
while one is formatted and sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, Generic, Protocol, TypeVar

import orjson
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from database.core import Tenant, get_database
from utils.auth import Principal
from utils.fastjson import with_standard_floats

PAGE_ROWS = 500
# A page also ends once its rows weigh this much as text: it is built in memory, a case may be
# megabytes, and a page of 500 such would be gigabytes. It holds its first row whatever its size.
PAGE_BYTES = 4 * 1024 * 1024
# Datetimes as pydantic's JSON mode writes them (UTC as "Z").
_ORJSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z

Item = TypeVar("Item")
Row = TypeVar("Row")
Item_contra = TypeVar("Item_contra", contravariant=True)
# Reads the next page (it keeps its own place); None once there are no more.
ReadPage = Callable[[AsyncSession], Awaitable[Sequence[Item] | None]]


class PageEncoder(Protocol[Item_contra]):
    """A document written in parts: what comes before the rows, each page of rows, the end."""

    def head(self) -> bytes: ...

    def page(self, items: Sequence[Item_contra]) -> bytes: ...

    def tail(self) -> bytes: ...


class ConvertedPages(Generic[Row, Item]):
    """`encoder`'s document of the items `convert` makes of the rows read. The conversion runs
    with the page's encoding, in the worker thread: validating a page of large rows took tens
    of milliseconds, too long to hold the event loop."""

    def __init__(self, convert: Callable[[Row], Item], encoder: PageEncoder[Item]) -> None:
        self._convert = convert
        self._encoder = encoder

    def head(self) -> bytes:
        return self._encoder.head()

    def page(self, rows: Sequence[Row]) -> bytes:
        return self._encoder.page([self._convert(row) for row in rows])

    def tail(self) -> bytes:
        return self._encoder.tail()


async def stream_pages(
    principal: Principal, read_page: ReadPage[Item], encoder: PageEncoder[Item]
) -> AsyncIterator[bytes]:
    """The document, page by page, read as `principal` (its organization and user).

    A failure once the first bytes have left is raised, not caught: the server then ends the
    response without the chunked body's last chunk, which every HTTP client reports as an
    incomplete body, where a closing bracket or tail would make a shorter file look whole."""
    tenant = Tenant(principal.organization_id, principal.user_id)

    async def read() -> Sequence[Item] | None:
        async with get_database().transaction(tenant) as session:
            return await read_page(session)

    if head := encoder.head():
        yield head
    # The next page is read while this one is formatted and sent (a page ahead at most: memory
    # stays two pages), so the database's part of the work overlaps ours. A read is never
    # cancelled midway, as a client leaving cancels this generator: its connection would be
    # left mid-statement, to be discarded. It is bounded: one page.
    reading = asyncio.create_task(read())
    try:
        while (items := await asyncio.shield(reading)) is not None:
            reading = asyncio.create_task(read())
            if items and (chunk := await asyncio.to_thread(encoder.page, items)):
                yield chunk
    finally:
        if not reading.done():  # the client left, or a page failed: the read is not used
            reading.add_done_callback(_retrieve)
            await asyncio.wait([reading])  # cancelling this wait leaves the read running
    if tail := encoder.tail():
        yield tail


class GoneMidway(RuntimeError):
    """What a document was read from is gone (deleted, or out of the reader's reach) before
    its last page: raised, the response ends as incomplete rather than a shorter whole."""


async def gone_midway(session: AsyncSession, model: Any, key: Any, name: str) -> None:
    """Raises GoneMidway unless the `model` row of `key` is still there: where the pages
    ran out, they may have run out because their source was deleted."""
    if await session.get(model, key) is None:
        raise GoneMidway(f"the {name} was deleted while it was exported")


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Collects an unused read's outcome (its error is moot, not to be logged as unseen)."""
    if not task.cancelled():
        task.exception()


def json_dump(item: BaseModel) -> Any:
    """`item.model_dump(mode="json")`, from the model's serializer itself: model_dump's own
    handling of its arguments added a third to the time of dumping a test case."""
    return item.__pydantic_serializer__.to_python(item, mode="json")


def model_for_orjson(item: BaseModel) -> Any:
    return with_standard_floats(json_dump(item))


class JsonArrayEncoder(Generic[Item]):
    """A JSON array, byte for byte as json.dumps(..., ensure_ascii=False, indent=2) writes the
    whole list of the items' `json_data`, a page at a time. orjson writes it (the standard
    library's indented writer is pure Python) given `for_orjson`'s data: the same, with the
    standard library's text of the floats whose text orjson would write otherwise (datetimes
    are written as pydantic writes them)."""

    def __init__(
        self,
        for_orjson: Callable[[Item], Any] = model_for_orjson,  # type: ignore[assignment]
        json_data: Callable[[Item], Any] = json_dump,  # type: ignore[assignment]
    ) -> None:
        self._for_orjson = for_orjson
        self._json_data = json_data
        self._started = False

    def head(self) -> bytes:
        return b""

    def page(self, items: Sequence[Item]) -> bytes:
        if not items:
            return b""
        try:
            # The page as a list of its own, less its brackets: its elements, indented as
            # they are inside the document's list.
            dumped = list(map(self._for_orjson, items))
            elements = orjson.dumps(dumped, option=_ORJSON_OPTIONS)[2:-2]
        except TypeError:  # what orjson refuses (an integer beyond 64 bits, say)
            elements = _standard_elements(list(map(self._json_data, items)))
        opening = b",\n" if self._started else b"[\n"
        self._started = True
        return opening + elements

    def tail(self) -> bytes:
        return b"\n]" if self._started else b"[]"


def _standard_elements(dumped: list[Any]) -> bytes:
    # An element inside the list is its own dump indented one level more: every newline of
    # the dump is structure (newlines within strings are escaped).
    return ",\n".join(
        "  " + json.dumps(item, ensure_ascii=False, indent=2).replace("\n", "\n  ")
        for item in dumped
    ).encode()


# The C encoder json.dumps(value, ensure_ascii=False) runs, made once: json.dumps makes an
# encoder on every call, and JSONEncoder.encode sets the C one up on every call (3-4 µs for a
# cell's short list, where this takes 1). No check for cycles: JSON data read has none.
_UNESCAPED = json.JSONEncoder(ensure_ascii=False)
_ENCODE_CHUNKS = (
    c_make_encoder(
        None, _UNESCAPED.default, encode_basestring, None, ": ", ", ", False, False, True
    )
    if c_make_encoder is not None
    else None
)


def json_text(value: Any) -> str:
    """`json.dumps(value, ensure_ascii=False)`, the text of a JSON cell or line in an export."""
    if _ENCODE_CHUNKS is None:
        return _UNESCAPED.encode(value)
    return "".join(_ENCODE_CHUNKS(value, 0))


def csv_text(rows: Iterable[Sequence[Any]]) -> bytes:
    """Rows byte for byte as the csv module's default dialect writes them (CRLF line ends),
    in a third of its time on long text: the module reads every character of a cell to decide
    whether to quote it, where `str.replace` and `in` search whole strings at once (the csv
    module's writer took a quarter of a profile of exporting 100,000 results of 1 KB)."""
    return "".join(_csv_line(row) for row in rows).encode()


def _csv_line(row: Sequence[Any]) -> str:
    if len(row) == 1 and row[0] in ("", None):
        return '""\r\n'  # an empty line would read back as no row at all
    return ",".join(map(csv_cell, row)) + "\r\n"


def csv_cell(value: Any) -> str:
    if type(value) is str:
        return csv_quoted(value)
    if value is None:
        return ""
    if type(value) is int or type(value) is float:
        return repr(value)  # the csv module's text of a number; never quoted
    return csv_quoted(str(value))


def csv_quoted(text: str) -> str:
    """`text` as a cell of the csv module's default dialect."""
    if '"' in text:
        return '"' + text.replace('"', '""') + '"'
    if "," in text or "\n" in text or "\r" in text:
        return '"' + text + '"'
    return text
