"""A streamed run export over a real HTTP server (uvicorn, as `python -m app serve` serves):
a large one leaves in several chunks, and one that fails midway ends the response so that the
client sees an error, never a shorter file that looks whole."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from database.results import export
from database.test_sets.streaming import PAGE_ROWS, JsonArrayEncoder
from tests.database.results.test_export_stream import _run, _write_results
from tests.helpers import register
from tests.serving import port_of, served

FORMATS = ("csv", "json", "junit")


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a real socket, in this event loop (so monkeypatches apply), and a client."""
    async with served(app) as server:
        base_url = f"http://127.0.0.1:{port_of(server)}"
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            yield http


async def read_chunks(http: httpx.AsyncClient, url: str, fmt: str, headers: Any) -> list[bytes]:
    chunks = []
    async with http.stream("GET", url, params={"format": fmt}, headers=headers) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
    return chunks


async def _large_run(client: httpx.AsyncClient, database: Any) -> tuple[Any, dict[str, Any]]:
    owner = await register(client)
    run = await _run(client, owner, cases=PAGE_ROWS + 100, repetitions=3)
    await _write_results(database, owner, run, ["an answer of some length " * 8])
    return owner, run


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_large_export_leaves_in_several_chunks(app, client, database, fmt):
    owner, run = await _large_run(client, database)
    whole = await client.get(
        f"/api/v1/runs/{run['id']}/export", params={"format": fmt}, headers=owner.headers
    )
    assert whole.status_code == 200
    async with serving(app) as http:
        url = f"/api/v1/runs/{run['id']}/export"
        chunks = await read_chunks(http, url, fmt, owner.headers)
    # One chunk per page at least (3 pages of results and more), together the whole document.
    assert len(chunks) >= 3
    assert b"".join(chunks) == whole.content


def _fail_after(pages: int, encode: Any) -> Any:
    """`encode` that raises once it has encoded `pages` pages."""
    calls = 0

    def failing(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > pages:
            raise ValueError("a result that cannot be encoded")
        return encode(*args)

    return failing


@pytest.mark.parametrize("fmt", FORMATS)
async def test_an_export_failing_midway_is_an_error_for_the_client(
    app, client, database, monkeypatch, fmt
):
    owner, run = await _large_run(client, database)
    encoders: dict[str, Any] = {
        "csv": export.CsvEncoder,
        "json": JsonArrayEncoder,
        "junit": export.JunitEncoder,
    }
    encoder = encoders[fmt]
    monkeypatch.setattr(encoder, "page", _fail_after(1, encoder.page))

    received = []
    async with serving(app) as http:
        url = f"/api/v1/runs/{run['id']}/export"
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            async with http.stream(
                "GET", url, params={"format": fmt}, headers=owner.headers
            ) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_raw():
                    received.append(chunk)
        # The server is fine afterwards: the next export (unbroken) is whole.
        monkeypatch.undo()
        whole = b"".join(await read_chunks(http, url, fmt, owner.headers))
    # Part of the document had left: the failure came midway, and only the error tells.
    sent = b"".join(received)
    assert sent
    assert whole.startswith(sent) and len(whole) > len(sent)
