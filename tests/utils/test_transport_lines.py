"""An event-stream answer is handed over line by line as it arrives, whatever the pieces the
bytes come in: a line split across many of them is put together once, in time proportional to
its length (the event loop does that work, every other call and stream of the process waiting)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import FakeServer
from utils import transport


class PieceServer(FakeServer):
    """Answers `GET /events` with an event stream sent as `.pieces`, each its own chunk of
    the chunked transfer encoding, a moment apart when `.gap` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.pieces: list[bytes] = []
        self.gap = 0.0

    def build_app(self) -> Starlette:
        return Starlette(routes=[Route("/events", self._events, methods=["GET"])])

    async def _events(self, request: Request) -> Response:
        await self.record(request)
        return StreamingResponse(self._send(list(self.pieces)), media_type="text/event-stream")

    async def _send(self, pieces: list[bytes]) -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece
            if self.gap:
                await self.sleep(self.gap)
            else:
                await asyncio.sleep(0)  # a chunk of its own, not gathered with the next


@pytest.fixture
def server() -> Iterator[PieceServer]:
    with PieceServer() as server:
        yield server


async def _lines(server: PieceServer) -> tuple[list[bytes], float]:
    """The lines handed over, and the CPU time this thread (the event loop's) spent."""
    lines: list[bytes] = []
    started = time.thread_time()
    status, _headers, body = await transport.send(
        "GET", f"{server.url}/events", body=None, headers={}, seconds=60, on_line=lines.append
    )
    spent = time.thread_time() - started
    assert (status, body) == (200, b"")
    return lines, spent


async def test_lines_split_anywhere_come_out_whole(server: PieceServer) -> None:
    server.gap = 0.01  # each piece arrives alone
    server.pieces = [b'data: {"a"', b": 1}\r", b"\n\ndata: two\n", b"data: th", b"ree\r\nlast"]
    lines, _ = await _lines(server)
    assert lines == [b'data: {"a": 1}', b"", b"data: two", b"data: three", b"last"]


async def test_a_long_line_in_small_pieces_costs_time_in_proportion_to_its_length(
    server: PieceServer,
) -> None:
    """8 MB in pieces of 4 KB: copying the line's start again with every piece, as the
    transport once did, moved about 8 GB and took seconds of the loop's time."""
    size, piece = 8 * 1024 * 1024, 4096
    server.pieces = [b"data: ", *[b"x" * piece] * (size // piece), b"\ndata: [DONE]\n"]
    lines, spent = await _lines(server)
    assert [len(line) for line in lines] == [len("data: ") + size, len("data: [DONE]")]
    assert spent < 1.5, f"{spent:.2f} s of the event loop's CPU"
