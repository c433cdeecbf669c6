"""OpenAI's chat-completions wire format (OpenAI, and every OpenAI-compatible server: Ollama,
vLLM, LiteLLM, ...), spoken directly over one shared aiohttp session per event loop.

Measured here at concurrency 50, the official SDK (through pydantic-ai) costs about 3-4 ms of
CPU per call on top of the HTTP exchange, which alone takes about 0.5 ms: a run's throughput
is bounded by that overhead, so this most common path skips it. Other providers still go
through pydantic-ai.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

OPENAI_BASE_URL = "https://api.openai.com/v1"
MAX_RESPONSE_BYTES = 10 * 1024 * 1024
PARAMETERS = ("temperature", "max_tokens", "top_p", "seed", "presence_penalty", "frequency_penalty")

_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


class WireError(Exception):
    """A failure before any HTTP status: kind is `timeout` or `connection_error`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class WireStatus(Exception):
    """The server answered with an error status (or a redirect)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str]) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def _session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        session = _sessions[loop] = aiohttp.ClientSession(connector=connector)
    return session


async def close_sessions() -> None:
    """Closes this loop's session (at shutdown)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()


def payload(
    model: str, messages: list[dict[str, str]], parameters: dict[str, Any]
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": messages}
    for key in PARAMETERS:
        if parameters.get(key) is not None:
            body[key] = parameters[key]
    if parameters.get("stop"):
        body["stop"] = parameters["stop"]
    return body


async def chat(
    *,
    base_url: str | None,
    api_key: str | None,
    body: dict[str, Any],
    seconds: float,
) -> tuple[str, int | None, int | None]:
    """One chat completion: (text, input tokens, output tokens)."""
    url = (base_url or OPENAI_BASE_URL).rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    started = time.perf_counter()
    try:
        async with (
            asyncio.timeout(seconds),
            _session().post(
                url, data=json.dumps(body), headers=headers, allow_redirects=False
            ) as response,
        ):
            raw = await _read_capped(response)
            status, reply_headers = (
                response.status,
                {key.lower(): value for key, value in response.headers.items()},
            )
    except TimeoutError as exc:
        if time.perf_counter() - started < seconds * 0.9:
            raise WireError("connection_error", "the connection failed") from exc
        raise WireError("timeout", f"no answer within {seconds:g} s") from exc
    except aiohttp.ClientError as exc:
        raise WireError("connection_error", f"could not reach the provider: {exc}") from exc
    if 300 <= status < 400:
        raise WireStatus(status, "the endpoint redirected; redirects are not followed", {})
    if status >= 400:
        raise WireStatus(status, _error_detail(raw), reply_headers)
    try:
        document = json.loads(raw)
        message = document["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValueError("the provider's answer is not a chat completion") from exc
    usage = document.get("usage") or {}
    return _text(message.get("content")), usage.get("prompt_tokens"), usage.get("completion_tokens")


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise aiohttp.ClientPayloadError(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _error_detail(raw: bytes) -> str:
    try:
        document = json.loads(raw)
    except ValueError:
        return raw[:300].decode(errors="replace")
    error = document.get("error", document) if isinstance(document, dict) else document
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return json.dumps(document)[:300]
