"""Outbound HTTP for targets and judges: one shared aiohttp session per event loop, no
redirects (the SSRF guard vetted only the configured URL), an overall deadline, and answers
capped in size."""

from __future__ import annotations

import asyncio
import time

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
        session = _sessions[loop] = aiohttp.ClientSession(connector=connector)
    return session


async def close_sessions() -> None:
    """Closes this loop's session (at shutdown)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()


async def send(
    method: str, url: str, *, body: str | None, headers: dict[str, str], seconds: float
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one exchange."""
    started = time.perf_counter()
    try:
        async with (
            asyncio.timeout(seconds),
            _session().request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as response,
        ):
            raw = await _read_capped(response)
            return (
                response.status,
                {key.lower(): value for key, value in response.headers.items()},
                raw,
            )
    except TimeoutError as exc:
        if time.perf_counter() - started < seconds * 0.9:
            raise TransportError("connection_error", "the connection failed") from exc
        raise TransportError("timeout", f"no answer within {seconds:g} s") from exc
    except aiohttp.ClientError as exc:
        raise TransportError("connection_error", f"could not reach the endpoint: {exc}") from exc


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
