"""A fake OpenAI-compatible API on loopback: chat completions (plain and streamed) and models.

with FakeOpenAI() as fake:
    client = AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
    fake.enqueue(Fault.http(429, retry_after=1), None, Fault.hang())
    # answer with tool calls instead of text (streamed: the arguments come in pieces)
    fake.reply = lambda request: FakeToolCalls([FakeToolCall("get_weather", {"city": "Oslo"})])
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import FakeServer, Fault, RecordedRequest, count_tokens

__all__ = [
    "FakeOpenAI",
    "FakeToolCall",
    "FakeToolCalls",
    "Fault",
    "RecordedRequest",
    "echo_reply",
    "message_text",
]

CREATED = 1_700_000_000  # fixed timestamp: responses are deterministic
ARGUMENT_PIECE_CHARS = 7  # streamed tool-call arguments arrive in pieces this long


@dataclass(frozen=True)
class FakeToolCall:
    """One call the fake model asks for. `arguments` as a str is sent verbatim (it may be
    broken JSON); `id` defaults to a generated one."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_text(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class FakeToolCalls:
    """A reply that calls tools (finish reason "tool_calls"), with optional text beside them."""

    calls: Sequence[FakeToolCall]
    content: str | None = None


Reply = Callable[[dict[str, Any]], str | FakeToolCalls]


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def echo_reply(request_json: dict[str, Any]) -> str:
    """Default reply: "echo: " + the text of the last user message."""
    users = [m for m in request_json.get("messages", []) if m.get("role") == "user"]
    return "echo: " + (message_text(users[-1]) if users else "")


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind, code = {
        401: ("invalid_request_error", "invalid_api_key"),
        429: ("requests", "rate_limit_exceeded"),
    }.get(status, ("invalid_request_error" if status < 500 else "server_error", None))
    text = message or f"Fake OpenAI error {status}"
    return {"error": {"message": text, "type": kind, "param": None, "code": code}}


# OpenAI's reasoning models (o1, o3, o4-mini, gpt-5, gpt-5.1, ...) refuse `max_tokens`.
_NO_MAX_TOKENS = re.compile(r"^(?:o\d|gpt-5)")


def _unsupported_max_tokens() -> dict[str, Any]:
    """OpenAI's own 400 body for `max_tokens` sent to such a model."""
    message = (
        "Unsupported parameter: 'max_tokens' is not supported with this model."
        " Use 'max_completion_tokens' instead."
    )
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }
    }


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


class FakeOpenAI(FakeServer):
    """`POST /v1/chat/completions` and `GET /v1/models`; point clients at `.base_url`.

    Runtime settings (plain attributes): `latency` (seconds before answering), `reply`
    (request JSON -> reply text, or `FakeToolCalls`), `require_api_key` (when set, requests need
    `Authorization: Bearer <it>` or get 401), `chunk_delay` (seconds between stream chunks).
    As OpenAI does, it answers `max_tokens` sent to an o-series or gpt-5 model with a 400.
    """

    def __init__(
        self,
        *,
        model: str = "fake-model",
        reply: Reply = echo_reply,
        latency: float = 0.0,
        require_api_key: str | None = None,
        chunk_delay: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.model = model
        self.reply = reply
        self.require_api_key = require_api_key
        self.chunk_delay = chunk_delay
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    def error_response(self, status: int, message: str | None = None) -> Response:
        return JSONResponse(_error_body(status, message), status_code=status)

    def _denied(self, recorded: RecordedRequest) -> Response | None:
        key = self.require_api_key
        if key is None or recorded.headers.get("authorization") == f"Bearer {key}":
            return None
        return self.error_response(401, "Incorrect API key provided.")

    async def _models(self, request: Request) -> Response:
        recorded = await self.record(request)
        if denied := self._denied(recorded):
            return denied
        model = {"id": self.model, "object": "model", "created": CREATED, "owned_by": "fake"}
        return JSONResponse({"object": "list", "data": [model]})

    async def _chat(self, request: Request) -> Response:
        recorded = await self.record(request)
        if denied := self._denied(recorded):
            return denied
        body = recorded.json
        if not isinstance(body, dict):
            return self.error_response(400, "The request body is not a JSON object.")
        if "max_tokens" in body and _NO_MAX_TOKENS.match(str(body.get("model") or self.model)):
            return JSONResponse(_unsupported_max_tokens(), status_code=400)
        fault = self.next_fault()
        await self.sleep(self.latency)
        stream = bool(body.get("stream"))
        if fault is not None:
            malformed = (
                Response(_sse('{"id": "broken'), media_type="text/event-stream")
                if stream
                else Response('{"id": "broken', media_type="application/json")
            )
            return await self.fault_response(request, fault, malformed)

        number = next(self._ids)
        reply = self.reply(body)
        content, tool_calls = _content_and_calls(reply, number)
        prompt_tokens = sum(count_tokens(message_text(m)) for m in body.get("messages", []))
        completion_tokens = count_tokens(
            " ".join([content or "", *(call["function"]["arguments"] for call in tool_calls)])
        )
        self.bill(prompt_tokens, completion_tokens)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        head = {
            "id": f"chatcmpl-fake-{number}",
            "created": CREATED,
            "model": body.get("model") or self.model,
            "system_fingerprint": None,
        }
        headers = {"x-request-id": f"req_fake_{number}"}
        if stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = self._chunks(head, content, tool_calls, usage if include_usage else None)
            return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": "tool_calls" if tool_calls else "stop",
        }
        completion = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
        return JSONResponse(completion, headers=headers)

    async def _chunks(
        self,
        head: dict[str, Any],
        content: str | None,
        tool_calls: list[dict[str, Any]],
        usage: dict[str, int] | None,
    ) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            extra = {"usage": None} if usage is not None else {}
            return {**head, "object": "chat.completion.chunk", "choices": [choice], **extra}

        yield _sse(chunk({"role": "assistant", "content": "" if content is not None else None}))
        for piece in re.findall(r"\S+\s*|\s+", content or ""):  # joined, they give `content`
            await self.sleep(self.chunk_delay)
            yield _sse(chunk({"content": piece}))
        for index, call in enumerate(tool_calls):  # as OpenAI: id and name first, then pieces
            function = call["function"]
            first = {**call, "index": index, "function": {**function, "arguments": ""}}
            yield _sse(chunk({"tool_calls": [first]}))
            text = function["arguments"]
            for start in range(0, len(text), ARGUMENT_PIECE_CHARS):
                await self.sleep(self.chunk_delay)
                piece = text[start : start + ARGUMENT_PIECE_CHARS]
                yield _sse(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )
        yield _sse(chunk({}, "tool_calls" if tool_calls else "stop"))
        if usage is not None:
            yield _sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        yield _sse("[DONE]")


def _content_and_calls(
    reply: str | FakeToolCalls, number: int
) -> tuple[str | None, list[dict[str, Any]]]:
    """The message's content and its tool calls in the wire shape."""
    if isinstance(reply, str):
        return reply, []
    calls = [
        {
            "id": call.id or f"call_fake_{number}_{index}",
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_text()},
        }
        for index, call in enumerate(reply.calls)
    ]
    return reply.content, calls
