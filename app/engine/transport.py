"""Outbound HTTP for targets and judges: one shared aiohttp session per event loop, no
redirects (the SSRF guard vetted only the configured URL), an overall deadline, and answers
capped in size."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

MAX_RESPONSE_BYTES = 10 * 1024 * 1024

_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


class TransportError(Exception):
    """No usable HTTP answer: kind is `timeout`, `connection_error` or `invalid_response`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        # No aiohttp timer: every exchange runs under the caller's asyncio.timeout below.
        timeout = aiohttp.ClientTimeout(total=None)
        session = _sessions[loop] = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            # The session is shared by every organization's calls: a cookie one endpoint sets
            # must never travel with another's request.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
    return session


async def close_sessions() -> None:
    """Closes this loop's session (at shutdown)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()


async def send(
    method: str,
    url: str,
    *,
    body: str | None,
    headers: dict[str, str],
    seconds: float,
    on_line: Callable[[bytes], None] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one exchange. With `on_line`, a
    successful event-stream answer is handed over line by line as it arrives (and the body
    returned is empty)."""
    started = time.perf_counter()
    try:
        async with (
            asyncio.timeout(seconds),
            _session().request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as response,
        ):
            reply_headers = {key.lower(): value for key, value in response.headers.items()}
            streamed = (
                on_line is not None and response.status < 300 and _is_event_stream(reply_headers)
            )
            if streamed:
                assert on_line is not None
                await _read_lines(response, on_line)
                return response.status, reply_headers, b""
            return response.status, reply_headers, await _read_capped(response)
    except TimeoutError as exc:
        if time.perf_counter() - started < seconds * 0.9:
            raise TransportError("connection_error", "the connection failed") from exc
        raise TransportError("timeout", f"no answer within {seconds:g} s") from exc
    except aiohttp.ClientError as exc:
        raise TransportError("connection_error", f"could not reach the endpoint: {exc}") from exc


def _is_event_stream(headers: dict[str, str]) -> bool:
    return headers.get("content-type", "").split(";")[0].strip() == "text/event-stream"


async def _read_lines(response: aiohttp.ClientResponse, on_line: Callable[[bytes], None]) -> None:
    size = 0
    async for line in response.content:
        size += len(line)
        if size > MAX_RESPONSE_BYTES:
            raise TransportError(
                "invalid_response", f"the answer is larger than {MAX_RESPONSE_BYTES} bytes"
            )
        on_line(line.rstrip(b"\r\n"))


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise TransportError(
                "invalid_response", f"the answer is larger than {MAX_RESPONSE_BYTES} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)
