"""The server's protocol times the reading of a request: a head arrives whole in time, and a
body pauses no longer than that between reads. Served for real (uvicorn with the service's
protocol) to a raw socket, so the test controls every byte's timing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.serving import port_of, served
from utils.config import Settings

READ_SECONDS = 0.5
WITHIN = READ_SECONDS + 2.0  # the refusal's deadline, with room for a busy machine
BODY = b"x" * 30


async def _app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/late-reader":  # a handler busy before it reads the body
        await asyncio.sleep(3 * READ_SECONDS)
    if scope["path"] == "/reader-near-deadline":  # asks for the body just before a deadline
        await asyncio.sleep(0.8 * READ_SECONDS)
    if scope["path"] == "/hold":  # a handler that holds the loop (no client is read meanwhile)
        time.sleep(3 * READ_SECONDS)  # noqa: ASYNC251
    if scope["path"] == "/early":  # an answer before the body is read (a 413 from its length)
        headers = [(b"content-length", b"9")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": b"too large"})
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":  # a handler slower than the read deadline
        await asyncio.sleep(3 * READ_SECONDS)
    answer = b"got %d" % len(body)
    headers = [(b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture
async def port(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    monkeypatch.setattr(settings, "request_read_seconds", READ_SECONDS)
    async with served(_app) as server:
        yield port_of(server)


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """What the server sent until it closed the connection (or WITHIN passed)."""
    return await asyncio.wait_for(reader.read(), WITHIN)


def _post(path: str, length: int, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_connection_that_sends_nothing_is_refused_in_time(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    answer = await _answer(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert READ_SECONDS <= time.monotonic() - started < WITHIN


async def test_a_head_sent_a_byte_at_a_time_is_refused_from_the_connections_opening(port: int):
    """Slowloris: each byte comes well inside the deadline, the head never does."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 1000
    answered = asyncio.ensure_future(_answer(reader))
    for byte in head:
        if answered.done():
            break
        writer.write(bytes([byte]))
        await asyncio.sleep(0.05)
    answer = await answered
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"took longer than 0.5 s" in answer
    assert time.monotonic() - started < WITHIN + 0.1


async def test_a_body_that_stalls_closes_its_connection(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/", len(BODY)) + BODY[:10])
    started = time.monotonic()
    answer = await _answer(reader)
    writer.close()
    assert answer == b""  # closed, no answer: the handler read a disconnection
    assert READ_SECONDS <= time.monotonic() - started < WITHIN


async def test_a_slow_body_that_keeps_coming_is_served(port: int):
    """Each pause is inside the deadline; the body as a whole takes three times as long."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/", len(BODY)))
    for start in range(0, len(BODY), 10):
        await asyncio.sleep(0.6 * READ_SECONDS)
        writer.write(BODY[start : start + 10])
    answer = await asyncio.wait_for(reader.readuntil(b"got 30"), WITHIN)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("body", [b"", BODY])
async def test_a_handler_slower_than_the_deadline_answers(port: int, body: bytes):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/slow", len(body)) + body)
    answer = await asyncio.wait_for(reader.readuntil(b"got %d" % len(body)), 3 * WITHIN)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200")


async def test_a_body_the_handler_has_not_asked_for_yet_is_not_the_clients_delay(port: int):
    """Two waits are the server's, not the client's: a client that expects `100 Continue`
    sends its body once asked, and a body larger than the read buffer pauses reading until
    the handler reads it. Neither closes the connection."""
    large = b"y" * 300_000
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/late-reader", len(BODY), "Expect: 100-continue"))
    continued = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3 * WITHIN)
    assert continued.startswith(b"HTTP/1.1 100"), continued
    writer.write(BODY)
    answer = await asyncio.wait_for(reader.readuntil(b"got 30"), WITHIN)
    assert answer.startswith(b"HTTP/1.1 200")
    writer.write(_post("/late-reader", len(large)) + large)  # the same connection, kept alive
    answer = await asyncio.wait_for(reader.readuntil(b"got 300000"), 3 * WITHIN)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200")


async def test_a_client_has_a_whole_deadline_after_its_100_continue(port: int):
    """The handler asks for the body just before the head's deadline ends: the client's
    pause is timed from the ask, not from the head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/reader-near-deadline", len(BODY), "Expect: 100-continue"))
    continued = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN)
    assert continued.startswith(b"HTTP/1.1 100"), continued
    await asyncio.sleep(0.6 * READ_SECONDS)  # past the deadline counted from the head
    writer.write(BODY)
    answer = await asyncio.wait_for(reader.readuntil(b"got 30"), WITHIN)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200")


async def test_a_body_sent_while_the_server_held_its_loop_is_not_the_clients_delay(port: int):
    """The loop held past the read deadline (a handler's blocking work): the deadline's call
    came late, with the client's bytes unread behind it, and closed a connection whose client
    had not paused. A deadline called that late is set again."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/", len(BODY)) + BODY[:10])
    await asyncio.sleep(0.2 * READ_SECONDS)
    holder_reader, holder = await asyncio.open_connection("127.0.0.1", port)
    holder.write(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")  # the loop is held from here
    await asyncio.wait_for(holder_reader.readuntil(b"got 0"), 3 * WITHIN)
    writer.write(BODY[10:])  # as soon as this client's loop could
    answer = await asyncio.wait_for(reader.readuntil(b"got 30"), WITHIN)
    writer.close()
    holder.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer


async def test_a_kept_alive_connections_next_head_is_timed_from_its_first_byte(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for n in range(3):  # together longer than the deadline
        writer.write(b"GET / HTTP/1.1\r\n")
        await asyncio.sleep(0.6 * READ_SECONDS)
        writer.write(b"Host: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.readuntil(b"got 0"), WITHIN)
        assert answer.startswith(b"HTTP/1.1 200"), (n, answer)
    writer.close()


async def test_a_kept_alive_connections_next_head_that_stalls_is_refused(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"got 0"), WITHIN)
    writer.write(b"GET / HTTP/1.1\r\n")
    started = time.monotonic()
    answer = await _answer(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert READ_SECONDS <= time.monotonic() - started < WITHIN


@pytest.mark.parametrize("after", ["blank lines", "a body answered early"])
async def test_a_connection_idle_after_an_answer_is_closed_in_time(port: int, after: str):
    """Bytes after an answer that begin no request stopped uvicorn's keep-alive timer, and
    nothing else timed the connection: held for ever, no credential needed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if after == "blank lines":
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"got 0"), WITHIN)
        writer.write(b"\r\n")
    else:
        writer.write(_post("/early", 5))
        await asyncio.wait_for(reader.readuntil(b"too large"), WITHIN)
        writer.write(b"hello")
    started = time.monotonic()
    rest = await _answer(reader)
    writer.close()
    assert rest == b""
    assert time.monotonic() - started < WITHIN


async def test_the_rest_of_a_body_answered_early_has_one_deadline_in_all(port: int):
    """A body refused by its length (a 413 before it is read) and then sent a byte at a time,
    each inside the deadline: the connection is closed the deadline after its first byte."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/early", 10**15))
    await asyncio.wait_for(reader.readuntil(b"too large"), WITHIN)
    started = time.monotonic()
    closed = asyncio.ensure_future(_answer(reader))
    while not closed.done() and time.monotonic() - started < 3 * WITHIN:
        writer.write(b"x")
        await asyncio.sleep(0.6 * READ_SECONDS)
    rest = await closed
    writer.close()
    assert rest == b""
    assert time.monotonic() - started < WITHIN
