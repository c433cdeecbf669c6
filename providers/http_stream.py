"""A team's HTTP endpoint answering with server-sent events: each event's JSON `data` holds a
piece of the answer at the configuration's `stream_path` (and, optionally, tool calls at its
`tool_calls_path`); `[DONE]` ends the answer. The events arrive line by line from the shared
transport (utils/transport.py), which reads an event-stream answer as it comes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from providers.config import ToolCall
from providers.errors import TargetError, error_text
from providers.tool_calls import read_calls
from utils import fastjson

# An event's data is one piece of the answer, never the whole: no more than this of it.
MAX_EVENT_BYTES = 256 * 1024
# An event's data, or a whole answer (providers.targets), larger than this is parsed and read
# at its paths in a thread: a recursive descent walks all of it, about half a second a
# megabyte, and the event loop is every other call's and stream's.
READ_ON_LOOP_BYTES = 16 * 1024

Finder = Callable[[Any], list[Any]]  # the values a JSONPath finds in a document


class EventStream:
    """Reads an event stream line by line: an event is its `data:` lines (joined by newlines)
    up to a blank line. Each event's text piece is handed to `on_delta` as it arrives.

    Called on the event loop, `line` returns the work left on a large event (read in a thread),
    to be awaited before the next line: the transport does."""

    def __init__(
        self,
        on_delta: Callable[[str], None],
        *,
        stream_path: str,
        find_piece: Finder,
        tool_calls_path: str | None = None,
        find_calls: Finder | None = None,
    ) -> None:
        self.on_delta = on_delta
        self.stream_path = stream_path
        self.find_piece = find_piece
        self.tool_calls_path = tool_calls_path
        self.find_calls = find_calls
        self.pieces: list[str] = []
        self.calls: list[Any] = []  # every event's calls, read together at the end
        self.data: list[bytes] = []
        self.size = 0  # of the event's data so far
        self.found = False  # some event had a value at the stream path
        self.done = False
        self.event = b""  # the event's name, if it has one (`event: error`)

    def line(self, line: bytes) -> Awaitable[None] | None:
        if self.done:
            return None
        if not line:  # the blank line that ends an event
            return self._dispatch(off_loop=_on_event_loop())
        if line.startswith(b"data:"):
            data = line[5:]
            self.data.append(data[1:] if data.startswith(b" ") else data)
            self.size += len(data)
            if self.size > MAX_EVENT_BYTES:
                raise TargetError(
                    "invalid_response",
                    f"an event of the endpoint's stream is larger than {MAX_EVENT_BYTES} bytes",
                )
        elif line.startswith(b"event:"):
            self.event = line[6:].strip()
        # Comments (":..."), `id:` and `retry:` lines say nothing of the answer.
        return None

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        """The whole answer once the stream has ended (an event not closed by a blank line
        included): the pieces joined, and the tool calls the events held."""
        if not self.done:
            self._dispatch(off_loop=False)
        tool_calls = read_calls(self.calls, self.tool_calls_path or "the stream")
        if not self.found and not tool_calls:
            raise TargetError(
                "invalid_response", f"no event of the endpoint's stream had {self.stream_path}"
            )
        return "".join(self.pieces), tool_calls

    def _dispatch(self, *, off_loop: bool) -> Awaitable[None] | None:
        event, self.event = self.event, b""  # an event's name ends with it, data or none
        if not self.data:
            return None
        data, self.data, self.size = b"\n".join(self.data), [], 0
        if data.strip() == b"[DONE]":
            self.done = True
            return None
        if off_loop and len(data) > READ_ON_LOOP_BYTES:
            return self._take_read_in_thread(event, data)
        self._take(*self._read(event, data))
        return None

    async def _take_read_in_thread(self, event: bytes, data: bytes) -> None:
        self._take(*await asyncio.to_thread(self._read, event, data))

    def _read(self, event: bytes, data: bytes) -> tuple[list[Any], list[Any]]:
        """The event's tool calls and the values at its stream path (None left out). Touches
        nothing of the stream's state: it may run in a thread."""
        try:
            document = fastjson.loads_answer(data)
        except ValueError as exc:
            raise TargetError(
                "invalid_response", "an event of the endpoint's stream is not JSON"
            ) from exc
        if event == b"error" or (isinstance(document, dict) and document.get("error")):
            # A server failing mid-stream says so in an event of its own: the answer is that
            # failure, not the pieces before it (a server's error, tried again as one).
            said = error_text(document)
            raise TargetError("server_error", f"the stream reported an error: {said}")
        calls = self.find_calls(document) if self.find_calls is not None else []
        values = [value for value in self.find_piece(document) if value is not None]
        return calls, values

    def _take(self, calls: list[Any], values: list[Any]) -> None:
        self.calls.extend(calls)
        if not values:
            return  # an event without a piece of the answer (a status, the usage, ...)
        self.found = True
        value = values[0]
        piece = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if piece:
            self.pieces.append(piece)
            self.on_delta(piece)


def _on_event_loop() -> bool:
    """Whether this thread runs an event loop (whose caller awaits what `line` returns)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
