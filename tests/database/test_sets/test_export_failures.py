"""A streamed test set export over a real HTTP server: a large one leaves in several chunks, and
one whose reading or writing fails midway ends the response so that the client sees an error,
never a shorter file that looks whole."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError

from database.test_sets import crud, exports
from database.test_sets.streaming import PAGE_ROWS, JsonArrayEncoder
from tests.database.results.test_export_failures import read_chunks, serving
from tests.database.test_sets.test_export_stream import _jsonl
from tests.helpers import Account, create_project, create_test_set, register

FORMATS = ("csv", "json", "jsonl")
ENCODERS: dict[str, Any] = {
    "csv": exports._CsvEncoder,
    "json": JsonArrayEncoder,
    "jsonl": exports._JsonLinesEncoder,
}


async def _large_set(client: httpx.AsyncClient) -> tuple[Account, str]:
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    url = f"/api/v1/test-sets/{test_set['id']}/export"
    imported = await client.post(
        f"/api/v1/test-sets/{test_set['id']}/import",
        content=_jsonl(3 * PAGE_ROWS + 10),
        headers={**owner.headers, "Content-Type": "application/x-ndjson"},
    )
    assert imported.status_code == 201, imported.text
    return owner, url


async def _read_until_failure(http: httpx.AsyncClient, url: str, fmt: str, owner: Account) -> bytes:
    """What arrived before the response failed (it must fail, as an unfinished chunked body)."""
    received = []
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        async with http.stream("GET", url, params={"format": fmt}, headers=owner.headers) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_raw():
                received.append(chunk)
    return b"".join(received)


def _fail_on_call(number: int, function: Any, error: Exception) -> Any:
    """`function`, raising `error` from its `number`th call on."""
    calls = 0

    def failing(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls >= number:
            raise error
        return function(*args)

    return failing


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_large_set_leaves_in_several_chunks(app, client, database, fmt):
    owner, url = await _large_set(client)
    whole = await client.get(url, params={"format": fmt}, headers=owner.headers)
    assert whole.status_code == 200
    async with serving(app) as http:
        chunks = await read_chunks(http, url, fmt, owner.headers)
    assert len(chunks) >= 4  # a page at least each, 4 pages
    assert b"".join(chunks) == whole.content


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_case_failing_to_encode_midway_is_an_error_for_the_client(
    app, client, database, monkeypatch, fmt
):
    owner, url = await _large_set(client)
    encoder = ENCODERS[fmt]
    error = ValueError("a case that cannot be encoded")
    monkeypatch.setattr(encoder, "page", _fail_on_call(3, encoder.page, error))
    async with serving(app) as http:
        sent = await _read_until_failure(http, url, fmt, owner)
        monkeypatch.undo()
        whole = b"".join(await read_chunks(http, url, fmt, owner.headers))
    assert sent and whole.startswith(sent) and len(whole) > len(sent)


async def test_the_database_failing_midway_is_an_error_for_the_client(
    app, client, database, monkeypatch
):
    owner, url = await _large_set(client)
    lost = InterfaceError("SELECT", {}, ConnectionResetError("connection was closed"))
    read = crud.tests_in_order

    calls = 0

    async def tests_in_order(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise lost
        return await read(*args)

    monkeypatch.setattr(crud, "tests_in_order", tests_in_order)
    async with serving(app) as http:
        sent = await _read_until_failure(http, url, "jsonl", owner)
    assert calls == 2
    # The first page left, whole lines of it, and nothing after.
    lines = sent.decode().splitlines()
    assert len(lines) == PAGE_ROWS


async def test_a_page_being_read_when_the_client_leaves_is_read_to_its_end(
    app, client, database, monkeypatch
):
    """Cancelled midway, a page's read would leave its connection mid-statement: here the
    test's one connection, which every later request would then find broken."""
    owner, url = await _large_set(client)
    read = crud.tests_in_order
    calls, outcome = 0, []
    reading = asyncio.get_running_loop().create_future()

    async def tests_in_order(session: Any, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls != 2:
            return await read(session, *args)
        reading.set_result(asyncio.current_task())
        try:
            await session.execute(text("SELECT pg_sleep(0.5)"))  # still reading as they leave
            rows = await read(session, *args)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        outcome.append("read")
        return rows

    monkeypatch.setattr(crud, "tests_in_order", tests_in_order)
    async with serving(app) as http:
        async with http.stream("GET", url, params={"format": "jsonl"}, headers=owner.headers) as r:
            assert r.status_code == 200
            async for _first_page in r.aiter_raw():
                break
            read_task = await asyncio.wait_for(reading, 10)  # the second page is being read
        await asyncio.wait_for(asyncio.wait([read_task]), 10)  # its transaction has ended
        monkeypatch.undo()
        whole = b"".join(await read_chunks(http, url, "jsonl", owner.headers))
    assert outcome == ["read"]
    assert len(whole.decode().splitlines()) == 3 * PAGE_ROWS + 10
