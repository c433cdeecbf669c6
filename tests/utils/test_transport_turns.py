"""Reading an event stream, the transport lets the event loop run whenever a few milliseconds
of work on its lines have passed, however few lines that was: it once waited for 200 lines,
whatever each cost (a parsed event of 250 KB, 0.3 s). A line reader's costly work, handed back
as an awaitable, is awaited before the next line, in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import FakeServer
from utils import transport

LINES = 250  # more than the 200 lines the transport once read between two turns


class LinesServer(FakeServer):
    """Answers `GET /events` with LINES short event-stream lines, all in one chunk."""

    def build_app(self) -> Starlette:
        return Starlette(routes=[Route("/events", self._events, methods=["GET"])])

    async def _events(self, request: Request) -> Response:
        await self.record(request)
        return StreamingResponse(self._send(), media_type="text/event-stream")

    async def _send(self) -> AsyncIterator[bytes]:
        yield b"".join(b"data: %d\n" % number for number in range(LINES))


@pytest.fixture
def server() -> Iterator[LinesServer]:
    with LinesServer() as server:
        yield server


async def test_the_loop_gets_a_turn_after_a_few_milliseconds_of_lines(
    server: LinesServer,
) -> None:
    lines: list[bytes] = []
    between_turns: list[int] = []
    reading = True

    def costly(line: bytes) -> None:
        time.sleep(0.002)  # holds the loop's thread, as parsing a large event did
        lines.append(line)

    async def count_turns() -> None:
        seen = 0
        while reading:
            await asyncio.sleep(0)
            between_turns.append(len(lines) - seen)
            seen = len(lines)

    counter = asyncio.create_task(count_turns())
    try:
        await transport.send(
            "GET", f"{server.url}/events", body=None, headers={}, seconds=60, on_line=costly
        )
    finally:
        reading = False
        await counter
    assert lines == [b"data: %d" % number for number in range(LINES)]
    # 5 ms of 2 ms lines: three, a few more on a slow machine; never the 200 it once was.
    assert max(between_turns) <= 20, max(between_turns)


async def test_what_a_line_reader_hands_back_is_awaited_before_the_next_line(
    server: LinesServer,
) -> None:
    order: list[str] = []

    async def finish(line: bytes) -> None:
        await asyncio.sleep(0.001)
        order.append(f"done {line.decode()}")

    def reader(line: bytes) -> Awaitable[None] | None:
        order.append(f"read {line.decode()}")
        return finish(line) if line.endswith(b"7") else None

    await transport.send(
        "GET", f"{server.url}/events", body=None, headers={}, seconds=60, on_line=reader
    )
    expected = []
    for number in range(LINES):
        expected.append(f"read data: {number}")
        if number % 10 == 7:
            expected.append(f"done data: {number}")
    assert order == expected
