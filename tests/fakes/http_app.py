"""A fake team LLM application on loopback: `POST /chat` (or any configured path) answers
`{"data": {"answer": <reply>}, "usage": {...}}`.

    with FakeHttpApp() as app:
        httpx.post(f"{app.url}/chat", json={"message": "hi"})  # -> answer "echo: hi"
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
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


class FakeHttpApp(FakeServer):
    """Answers on every method for the paths in `.paths` (a mutable set), 404 elsewhere.

    Runtime settings (plain attributes): `latency`, `reply`, `paths`.
    """

    def __init__(
        self,
        *,
        paths: Iterable[str] = ("/chat",),
        reply: Reply = echo_answer,
        latency: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.paths = set(paths)
        self.reply = reply

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
            malformed = Response('{"data": {"answer": ', media_type="application/json")
            return await self.fault_response(request, fault, malformed)
        result = self.reply(recorded.json)
        if isinstance(result, str):
            prompt, completion = count_tokens(question_of(recorded.json)), count_tokens(result)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            result = {"data": {"answer": result}, "usage": usage}
        return JSONResponse(result)
