"""OpenAI's chat-completions wire format (OpenAI, and every OpenAI-compatible server: Ollama,
vLLM, LiteLLM, ...), spoken directly over the shared outbound HTTP client (utils/transport.py).

Measured here at concurrency 50, the official SDK (through pydantic-ai) costs about 3-4 ms of
CPU per call on top of the HTTP exchange, which alone takes about 0.5 ms: a run's throughput
is bounded by that overhead, so this most common path skips it (see utils/transport.py).
Other providers still go through pydantic-ai.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from providers.config import ToolCall
from providers.errors import DETAIL_READ_CHARS
from providers.tool_calls import StreamedCalls, read_calls
from utils import fastjson, transport
from utils.ssrf import Pin

OPENAI_BASE_URL = "https://api.openai.com/v1"
PARAMETERS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")


class WireStatus(Exception):
    """The server answered with an error status (or a redirect)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str]) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int | None
    output_tokens: int | None
    tool_calls: tuple[ToolCall, ...] = ()


def payload(
    model: str,
    messages: list[dict[str, Any]],
    parameters: dict[str, Any],
    tools: list[dict[str, Any]] | None = None,
    *,
    provider: str,
) -> dict[str, Any]:
    """The request's body. The answer's length limit (`max_tokens` as configured) is sent as
    OpenAI's `max_completion_tokens` to OpenAI, which refuses `max_tokens` for its reasoning
    models (o-series, gpt-5), and as `max_tokens` to other servers, which may know only that."""
    body: dict[str, Any] = {"model": model, "messages": messages}
    for key in PARAMETERS:
        if parameters.get(key) is not None:
            body[key] = parameters[key]
    if parameters.get("max_tokens") is not None:
        limit = "max_completion_tokens" if provider == "openai" else "max_tokens"
        body[limit] = parameters["max_tokens"]
    if parameters.get("stop"):
        body["stop"] = parameters["stop"]
    if tools:
        body["tools"] = tools
        if parameters.get("tool_choice") is not None:
            body["tool_choice"] = parameters["tool_choice"]
    return body


async def chat(
    *,
    base_url: str | None,
    api_key: str | None,
    body: dict[str, Any],
    seconds: float,
    on_delta: Callable[[str], None] | None = None,
    pin: Pin | None = None,
) -> Completion:
    """One chat completion: its text, token counts and tool calls. With `on_delta`, the answer
    is requested as a stream and each piece of text is handed over as it arrives."""
    url = (base_url or OPENAI_BASE_URL).rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    stream = _Stream(on_delta) if on_delta is not None else None
    if stream is not None:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    status, reply_headers, raw = await transport.send(
        "POST",
        url,
        body=fastjson.dumps_bytes(body),
        headers=headers,
        seconds=seconds,
        on_line=stream.line if stream is not None else None,
        pin=pin,
    )
    if 300 <= status < 400:
        raise WireStatus(status, "the endpoint redirected; redirects are not followed", {})
    if status >= 400:
        raise WireStatus(status, _error_detail(raw), reply_headers)
    if stream is not None and stream.started:
        return stream.result()
    return _whole(raw)


def _whole(raw: bytes) -> Completion:
    """A whole answer (also from a server that ignored the request to stream). A ValueError
    when it is not a chat completion (reported as an invalid response)."""
    try:
        document = fastjson.loads(raw)
        message = document["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValueError("the provider's answer is not a chat completion") from exc
    if not isinstance(message, dict):
        raise ValueError("the provider's answer is not a chat completion")
    usage = _usage(document.get("usage"))
    calls = message.get("tool_calls") or ()
    if not isinstance(calls, list | tuple):
        raise ValueError("the answer's tool_calls is not a list")
    tool_calls = read_calls(calls, "the answer")
    return Completion(_text(message.get("content")), *usage, tool_calls)


class _Stream:
    """Reads a streamed chat completion (server-sent events of chunks, then `[DONE]`)."""

    def __init__(self, on_delta: Callable[[str], None]) -> None:
        self.on_delta = on_delta
        self.parts: list[str] = []
        self.tool_calls = StreamedCalls()
        self.usage: tuple[int | None, int | None] = (None, None)
        self.started = False
        self.done = False

    def line(self, line: bytes) -> None:
        self.started = True
        if not line.startswith(b"data:"):
            return  # comments, event names, blank separators
        data = line[5:].strip()
        if data == b"[DONE]":
            self.done = True
            return
        try:
            chunk = fastjson.loads(data)
        except ValueError as exc:
            raise ValueError("a streamed chunk is not JSON") from exc
        if not isinstance(chunk, dict):
            raise ValueError("a streamed chunk is not a JSON object")
        if chunk.get("error"):
            # A server failing mid-stream says so in a chunk of its own (some then send
            # [DONE]): the answer is that failure, not the text before it.
            raise WireStatus(*_stream_failure(chunk["error"]), {})
        if chunk.get("usage") is not None:
            self.usage = _usage(chunk["usage"])
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise ValueError("a streamed chunk's choices is not a list")
        for choice in choices:
            if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict | None):
                raise ValueError("a streamed choice or its delta is not an object")
            delta = choice.get("delta") or {}
            self.tool_calls.add(delta.get("tool_calls"))
            piece = _text(delta.get("content"))
            if piece:
                self.parts.append(piece)
                self.on_delta(piece)

    def result(self) -> Completion:
        if not self.done:
            raise ValueError("the stream ended before [DONE]")
        return Completion("".join(self.parts), *self.usage, self.tool_calls.result())


_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
}


def _stream_failure(error: Any) -> tuple[int, str]:
    """The status a stream's error chunk gives (its `code`, when it is one; else a server's
    error, tried again as one) and its words."""
    code = error.get("code") if isinstance(error, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    if isinstance(code, int) and 400 <= code <= 599:
        status = code
    else:  # OpenAI's own words for a request that cannot succeed, or must wait
        status = _STATUS_OF_TYPE.get(str(kind), _STATUS_OF_TYPE.get(str(code), 500))
    said = error.get("message") if isinstance(error, dict) else error
    return status, f"the stream reported an error: {str(said)[:DETAIL_READ_CHARS]}"


def _text(content: Any) -> str:
    """A message's text: a string, or the texts of its content parts (a part without one,
    such as an image, adds nothing)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise ValueError("a message's content is neither text nor a list of parts")
    texts = [part["text"] for part in content if isinstance(part, dict) and "text" in part]
    if not all(isinstance(text, str) for text in texts):
        raise ValueError("the text of a content part is not a string")
    return "".join(texts)


def _usage(usage: Any) -> tuple[int | None, int | None]:
    """(input tokens, output tokens) of a `usage` object (or of none: unknown)."""
    if not isinstance(usage, dict):  # counts only: an answer stands without them
        return None, None
    return _tokens(usage.get("prompt_tokens")), _tokens(usage.get("completion_tokens"))


def _tokens(value: Any) -> int | None:
    """A count of tokens as a whole number, or None for anything that is not one (a server's
    "12" is 12): prices and sums are computed from it."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _error_detail(raw: bytes) -> str:
    try:
        document = fastjson.loads(raw)
    except ValueError:
        return raw[:DETAIL_READ_CHARS].decode(errors="replace")
    error = document.get("error", document) if isinstance(document, dict) else document
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:DETAIL_READ_CHARS]
    return json.dumps(document)[:DETAIL_READ_CHARS]
