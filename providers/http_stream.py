"""A team's HTTP endpoint answering with server-sent events: each event's JSON `data` holds a
piece of the answer at the configuration's `stream_path` (and, optionally, tool calls at its
`tool_calls_path`); `[DONE]` ends the answer. The events arrive line by line from the shared
transport (utils/transport.py), which reads an event-stream answer as it comes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from providers.config import ToolCall
from providers.errors import TargetError, error_text
from providers.tool_calls import read_calls
from utils import fastjson

# An event's data (one piece of the answer) is parsed and read at its path on the event loop:
# no more than this of it.
MAX_EVENT_BYTES = 256 * 1024

Finder = Callable[[Any], list[Any]]  # the values a JSONPath finds in a document


class EventStream:
    """Reads an event stream line by line: an event is its `data:` lines (joined by newlines)
    up to a blank line. Each event's text piece is handed to `on_delta` as it arrives."""

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

    def line(self, line: bytes) -> None:
        if self.done:
            return
        if not line:  # the blank line that ends an event
            self._dispatch()
        elif line.startswith(b"data:"):
            data = line[5:]
            self.data.append(data[1:] if data.startswith(b" ") else data)
            self.size += len(data)
            if self.size > MAX_EVENT_BYTES:
                # Read on the event loop, an event is a piece of the answer, never the whole.
                raise TargetError(
                    "invalid_response",
                    f"an event of the endpoint's stream is larger than {MAX_EVENT_BYTES} bytes",
                )
        elif line.startswith(b"event:"):
            self.event = line[6:].strip()
        # Comments (":..."), `id:` and `retry:` lines say nothing of the answer.

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        """The whole answer once the stream has ended (an event not closed by a blank line
        included): the pieces joined, and the tool calls the events held."""
        if not self.done:
            self._dispatch()
        tool_calls = read_calls(self.calls, self.tool_calls_path or "the stream")
        if not self.found and not tool_calls:
            raise TargetError(
                "invalid_response", f"no event of the endpoint's stream had {self.stream_path}"
            )
        return "".join(self.pieces), tool_calls

    def _dispatch(self) -> None:
        event, self.event = self.event, b""  # an event's name ends with it, data or none
        if not self.data:
            return
        data, self.data, self.size = b"\n".join(self.data), [], 0
        if data.strip() == b"[DONE]":
            self.done = True
            return
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
        if self.find_calls is not None:
            self.calls.extend(self.find_calls(document))
        values = [value for value in self.find_piece(document) if value is not None]
        if not values:
            return  # an event without a piece of the answer (a status, the usage, ...)
        self.found = True
        value = values[0]
        piece = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if piece:
            self.pieces.append(piece)
            self.on_delta(piece)
