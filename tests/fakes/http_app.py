"""A fake team LLM application on loopback: `POST /chat` (or any configured path) answers
`{"data": {"answer": <reply>}, "usage": {...}}`, or, with `sse` set, server-sent events: one
per word, `data: {"delta": "<word and the spaces after it>"}`, then one with the usage only,
then `data: [DONE]`.

    with FakeHttpApp() as app:
        httpx.post(f"{app.url}/chat", json={"message": "hi"})  # -> answer "echo: hi"
        app.sse, app.event_delay = True, 0.05  # -> events "echo: ", "hi", usage, [DONE]
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import FakeServer, Fault, RecordedRequest, count_tokens

__all__ = ["FakeHttpApp", "Fault", "RecordedRequest", "echo_answer", "question_of"]

QUESTION_KEYS = ("message", "question", "input", "prompt", "query", "text")

# Receives the parsed JSON body (None if absent or invalid). A str becomes the answer in the
# default envelope; a dict is sent as the whole response body.
Reply = Callable[[Any], str | dict[str, Any]]


def question_of(body: Any) -> str:
    """The first string among the usual question fields of the body, else ""."""
    if isinstance(body, dict):
        for key in QUESTION_KEYS:
            if isinstance(body.get(key), str):
                return body[key]
    return ""


def echo_answer(body: Any) -> str:
    """Default reply: "echo: " + the question."""
    return "echo: " + question_of(body)


def words(text: str) -> list[str]:
    """The pieces an SSE answer sends: each word with the spaces after it (leading spaces
    first), so that they join into the text."""
    return re.findall(r"^\s+|\S+\s*", text)


class FakeHttpApp(FakeServer):
    """Answers on every method for the paths in `.paths` (a mutable set), 404 elsewhere.

    Runtime settings (plain attributes): `latency`, `reply`, `paths`, `sse` (answer with
    server-sent events: a text reply word by word, a dict reply as one event's data) and
    `event_delay` (seconds between two events).
    """

    def __init__(
        self,
        *,
        paths: Iterable[str] = ("/chat",),
        reply: Reply = echo_answer,
        latency: float = 0.0,
        sse: bool = False,
        event_delay: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.paths = set(paths)
        self.reply = reply
        self.sse = sse
        self.event_delay = event_delay

    def build_app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    async def _handle(self, request: Request) -> Response:
        recorded = await self.record(request)
        if recorded.path not in self.paths:
            return JSONResponse({"error": "not found"}, status_code=404)
        fault = self.next_fault()
        await self.sleep(self.latency)
        if fault is not None:
            malformed = (
                Response('data: {"delta": \n\n', media_type="text/event-stream")
                if self.sse
                else Response('{"data": {"answer": ', media_type="application/json")
            )
            return await self.fault_response(request, fault, malformed)
        result = self.reply(recorded.json)
        usage = None
        if isinstance(result, str):
            prompt, completion = count_tokens(question_of(recorded.json)), count_tokens(result)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        if self.sse:
            events: list[str | dict[str, Any]] = (
                list(words(result)) if isinstance(result, str) else [result]
            )
            return StreamingResponse(
                self._events(events, usage),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        if isinstance(result, str):
            result = {"data": {"answer": result}, "usage": usage}
        return JSONResponse(result)

    async def _events(
        self, events: list[str | dict[str, Any]], usage: dict[str, int] | None
    ) -> AsyncIterator[str]:
        """A comment, each piece (or whole dict) as an event, the usage alone, then [DONE]."""
        yield ": the answer follows\n\n"
        for number, event in enumerate(events):
            if number:
                await self.sleep(self.event_delay)
            data = {"delta": event} if isinstance(event, str) else event
            yield f"id: {number}\nevent: delta\ndata: {json.dumps(data)}\n\n"
        if usage is not None:
            yield f"data: {json.dumps({'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
