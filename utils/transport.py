"""Outbound HTTP for targets and judges: one shared client per event loop, no redirects (the
SSRF guard vetted only the configured URL), no cookies, no proxy from the environment, an
overall deadline, and answers capped in size.

The client is pyreqwest (Rust's reqwest, run on its own thread): an exchange costs this
process about half the CPU an aiohttp exchange does, and a run's throughput is bounded by
the CPU of the process executing it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import timedelta

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import RequestError, RequestTimeoutError
from pyreqwest.response import Response

from utils.ssrf import Pin
from utils.url_redaction import redact_urls

MAX_RESPONSE_BYTES = 10 * 1024 * 1024
PINNED_CLIENTS = 256  # per event loop, the least recently used closed beyond it

# Takes each line of an event stream: what it returns, when not None, is awaited before the
# next line is handed over.
LineReader = Callable[[bytes], Awaitable[None] | None]

_clients: dict[asyncio.AbstractEventLoop, Client] = {}
_pinned: dict[asyncio.AbstractEventLoop, OrderedDict[Pin, Client]] = {}


class TransportError(Exception):
    """No usable HTTP answer: kind is `timeout`, `connection_error` or `invalid_response`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _builder() -> ClientBuilder:
    return (
        ClientBuilder()
        .follow_redirects(False)
        # Shared by every organization's calls: a cookie one endpoint sets must never
        # travel with another's request.
        .default_cookie_store(False)
        .no_proxy()
        .max_connections(None)
    )


def _client(pin: Pin | None) -> Client:
    """The client for a call: the shared one, or, for a vetted host, one that connects to the
    checked address only (its own resolution of that host is replaced by the pin)."""
    loop = asyncio.get_running_loop()
    if pin is None:
        client = _clients.get(loop)
        if client is None:
            client = _clients[loop] = _builder().build()
        return client
    pinned = _pinned.setdefault(loop, OrderedDict())
    client = pinned.get(pin)
    if client is None:
        client = pinned[pin] = _builder().resolve(pin.host, pin.address, pin.port).build()
        while len(pinned) > PINNED_CLIENTS:
            _, evicted = pinned.popitem(last=False)
            _closing.add(task := loop.create_task(evicted.close()))
            task.add_done_callback(_closing.discard)
    else:
        pinned.move_to_end(pin)
    return client


_closing: set[asyncio.Task[None]] = set()


async def close_sessions() -> None:
    """Closes this loop's clients (at shutdown)."""
    loop = asyncio.get_running_loop()
    clients = [*_pinned.pop(loop, {}).values()]
    shared = _clients.pop(loop, None)
    for client in [*clients, *([shared] if shared is not None else [])]:
        await client.close()


async def send(
    method: str,
    url: str,
    *,
    body: str | bytes | None,
    headers: dict[str, str],
    seconds: float,
    on_line: LineReader | None = None,
    pin: Pin | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one exchange, connecting to `pin`'s
    address when given (see utils/ssrf.vet). With `on_line`, a successful event-stream answer
    is handed over line by line as it arrives (and the body returned is empty): what `on_line`
    returns, when not None, is awaited before the next line (its costly work, done off the
    event loop)."""
    started = time.perf_counter()
    # The client's own deadline (covering the body too) costs this thread no timer.
    builder = _client(pin).request(method, url).headers(headers).timeout(timedelta(seconds=seconds))
    if isinstance(body, bytes):
        builder = builder.body_bytes(body)
    elif body is not None:
        builder = builder.body_text(body)
    if on_line is not None:
        # By default the client buffers 64 KB of the body before handing over anything:
        # streamed tokens must be handed over as they arrive.
        builder = builder.streamed_read_buffer_limit(1)
    try:
        async with builder.build_streamed() as response:
            reply_headers = {key.lower(): value for key, value in response.headers.items()}
            streamed = (
                on_line is not None and response.status < 300 and _is_event_stream(reply_headers)
            )
            if streamed:
                assert on_line is not None
                await _read_lines(response, on_line, started, seconds)
                return response.status, reply_headers, b""
            return response.status, reply_headers, await _read_capped(response)
    except RequestTimeoutError as exc:
        if time.perf_counter() - started < seconds * 0.9:
            raise TransportError("connection_error", "the connection failed") from exc
        raise TransportError("timeout", f"no answer within {seconds:g} s") from exc
    except RequestError as exc:
        # The client's words name the URL, query string and all: an endpoint may carry its key
        # in its path, and these words reach whoever reads the result (a viewer, an export).
        reason = redact_urls(str(exc), keep_path=False)
        raise TransportError("connection_error", f"could not reach the endpoint: {reason}") from exc


def _is_event_stream(headers: dict[str, str]) -> bool:
    return headers.get("content-type", "").split(";")[0].strip() == "text/event-stream"


async def _read_lines(
    response: Response, on_line: LineReader, started: float, seconds: float
) -> None:
    """Hands over each line as its end arrives. A line's start waits in one buffer that each
    chunk extends, and only the new bytes are searched for its end: a long line costs time in
    proportion to its length, not to its length times its chunks. No line is longer than the
    answer, whose size is capped.

    Each line is read on the event loop (an event parsed, a delta published): a chunk of many
    events lets the loop run whenever SECONDS_BETWEEN_TURNS have passed since its last turn,
    however many lines that took, and stops at the call's deadline (`seconds` from
    `started`), which the client's own timer cannot enforce while its chunk is being read here
    (ten megabytes of one-character events held the loop 12 s)."""
    reader = response.body_reader
    size, pending = 0, bytearray()
    turn = time.perf_counter()  # when the loop last had a turn
    while (chunk := await reader.read_chunk()) is not None:
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise TransportError(
                "invalid_response", f"the answer is larger than {MAX_RESPONSE_BYTES} bytes"
            )
        start, end = 0, len(pending)  # what was pending holds no line's end
        pending += chunk
        while (end := pending.find(b"\n", end)) != -1:
            handed = on_line(bytes(pending[start:end]).rstrip(b"\r"))
            start = end = end + 1
            if handed is not None:
                await handed  # its costly work ran off the loop, which had turns meanwhile
            elif time.perf_counter() - turn >= SECONDS_BETWEEN_TURNS:
                await asyncio.sleep(0)
            else:
                continue
            turn = time.perf_counter()
            if turn - started > seconds:
                raise TransportError("timeout", f"no answer within {seconds:g} s")
        del pending[:start]
    if pending:
        handed = on_line(bytes(pending).rstrip(b"\r"))
        if handed is not None:
            await handed


# Of work on the event loop, reading an event stream's lines, between two turns of the loop.
SECONDS_BETWEEN_TURNS = 0.005


async def _read_capped(response: Response) -> bytes:
    reader = response.body_reader
    chunks, size = [], 0
    while (chunk := await reader.read_chunk()) is not None:
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise TransportError(
                "invalid_response", f"the answer is larger than {MAX_RESPONSE_BYTES} bytes"
            )
        chunks.append(bytes(chunk))
    return b"".join(chunks)
