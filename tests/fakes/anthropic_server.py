"""A fake of Anthropic's Messages API on loopback: `POST /v1/messages`, answered whole or, when
the request asks to stream, as the API's server-sent events.

with FakeAnthropic() as fake:
    client = AsyncAnthropic(base_url=fake.url, api_key="sk-ant-test", max_retries=0)
    fake.reply = lambda request: FakeToolCalls([FakeToolCall("get_weather", {"city": "Oslo"})])
    fake.enqueue(Fault.http(529), None)

`reply` receives the request's JSON and returns the answer's text, or `FakeToolCalls` (tool_use
blocks after the text, if any; stop reason "tool_use"). A call's `arguments` given as text must
be a JSON object: the API's `input` is always one.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.openai_server import ARGUMENT_PIECE_CHARS, FakeToolCall, FakeToolCalls
from tests.fakes.server import FakeServer, Fault, RecordedRequest, count_tokens

__all__ = [
    "FakeAnthropic",
    "FakeToolCall",
    "FakeToolCalls",
    "Fault",
    "RecordedRequest",
    "block_text",
    "echo_reply",
]

Reply = Callable[[dict[str, Any]], str | FakeToolCalls]

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def block_text(content: Any) -> str:
    """The text of a message's content: a string, or the text of its blocks (a tool result's
    included)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            texts.append(block_text(block.get("content")))
    return "".join(texts)


def echo_reply(request_json: dict[str, Any]) -> str:
    """Default reply: "echo: " + the text of the last user message."""
    users = [m for m in request_json.get("messages", []) if m.get("role") == "user"]
    return "echo: " + (block_text(users[-1].get("content")) if users else "")


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message or f"Fake error {status}"}}


def _event(kind: str, **fields: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n"


def _content_blocks(reply: str | FakeToolCalls, number: int) -> list[dict[str, Any]]:
    if isinstance(reply, str):
        return [{"type": "text", "text": reply}]
    blocks: list[dict[str, Any]] = []
    if reply.content:
        blocks.append({"type": "text", "text": reply.content})
    for index, call in enumerate(reply.calls):
        arguments = call.arguments
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id or f"toolu_fake_{number}_{index}",
                "name": call.name,
                "input": json.loads(arguments) if isinstance(arguments, str) else arguments,
            }
        )
    return blocks


class FakeAnthropic(FakeServer):
    """`POST /v1/messages`; point clients at `.url` (the SDK adds `/v1/messages`).

    Runtime settings (plain attributes): `latency`, `reply`, `require_api_key` (when set,
    requests need it as `x-api-key` or `Authorization: Bearer`, or get 401), `chunk_delay`
    (seconds between two streamed deltas), `cut_after` (when set, a streamed answer ends after
    that many events: a stream cut short, without `message_delta` and `message_stop`).
    """

    def __init__(
        self,
        *,
        reply: Reply = echo_reply,
        latency: float = 0.0,
        require_api_key: str | None = None,
        chunk_delay: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.reply = reply
        self.require_api_key = require_api_key
        self.chunk_delay = chunk_delay
        self.cut_after: int | None = None
        self._ids = itertools.count(1)

    def build_app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

    def error_response(self, status: int, message: str | None = None) -> Response:
        return JSONResponse(_error_body(status, message), status_code=status)

    async def _messages(self, request: Request) -> Response:
        recorded = await self.record(request)
        key = self.require_api_key
        # The API takes the key as `x-api-key`; newer SDKs send it as a bearer token.
        sent = recorded.headers.get("x-api-key") or recorded.headers.get("authorization", "")
        if key is not None and sent.removeprefix("Bearer ") != key:
            return self.error_response(401, "invalid x-api-key")
        body = recorded.json
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self.error_response(400, "messages: Field required")
        if not isinstance(body.get("max_tokens"), int):
            return self.error_response(400, "max_tokens: Field required")
        fault = self.next_fault()
        await self.sleep(self.latency)
        stream = bool(body.get("stream"))
        if fault is not None:
            malformed = (
                Response(
                    'event: message_start\ndata: {"type": "mess\n\n', media_type="text/event-stream"
                )
                if stream
                else Response('{"id": "broken', media_type="application/json")
            )
            return await self.fault_response(request, fault, malformed)

        number = next(self._ids)
        content = _content_blocks(self.reply(body), number)
        system = body.get("system")
        prompt = [block_text(system)] + [block_text(m.get("content")) for m in body["messages"]]
        said = [block.get("text") or json.dumps(block.get("input")) for block in content]
        usage = {
            "input_tokens": sum(count_tokens(text) for text in prompt),
            "output_tokens": sum(count_tokens(text) for text in said),
        }
        uses_tools = any(block["type"] == "tool_use" for block in content)
        message = {
            "id": f"msg_fake_{number}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content,
            "stop_reason": "tool_use" if uses_tools else "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        headers = {"request-id": f"req_fake_{number}"}
        if stream:
            events = self._events(message, self.cut_after)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        return JSONResponse(message, headers=headers)

    async def _events(self, message: dict[str, Any], cut_after: int | None) -> AsyncIterator[str]:
        """The message as the API streams it (its first `cut_after` events only, when set)."""
        sent = 0
        async for event in self._all_events(message):
            if sent == cut_after:
                return
            yield event
            sent += 1

    async def _all_events(self, message: dict[str, Any]) -> AsyncIterator[str]:
        """Each block opened empty, its text word by word (or its input's JSON in pieces),
        then the stop reason and the output tokens."""
        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None}
        yield _event("message_start", message={**start, "usage": {**usage, "output_tokens": 1}})
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                opening = {**block, "text": ""}
                # Joined, the pieces give the text.
                pieces = re.findall(r"\S+\s*|\s+", block["text"])
                deltas = [{"type": "text_delta", "text": piece} for piece in pieces]
            else:
                opening = {**block, "input": {}}
                text = json.dumps(block["input"])
                deltas = [
                    {
                        "type": "input_json_delta",
                        "partial_json": text[at : at + ARGUMENT_PIECE_CHARS],
                    }
                    for at in range(0, len(text), ARGUMENT_PIECE_CHARS)
                ]
            yield _event("content_block_start", index=index, content_block=opening)
            for delta in deltas:
                await self.sleep(self.chunk_delay)
                yield _event("content_block_delta", index=index, delta=delta)
            yield _event("content_block_stop", index=index)
        ending = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        yield _event("message_delta", delta=ending, usage={"output_tokens": usage["output_tokens"]})
        yield _event("message_stop")
