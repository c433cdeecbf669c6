"""uvicorn's HTTP protocol (httptools) with bounds on reading a request, before any of the
service's code runs:

- its head (line and headers) holds at most MAX_HEAD_BYTES. httptools keeps every header it
  is sent, and a header's value however long it grows: three connections sending 100 MB of
  headers each held 300 MB of the server's memory, no credential needed. A head past the
  bound is refused (400) and its connection closed.
- it is read in time: its head arrives whole within `ASSAY_REQUEST_READ_SECONDS` (from the
  connection's opening, or from the next request's first byte), and its body pauses no
  longer than that between reads. uvicorn times only idle keep-alive connections: a client
  that opened connections and sent nothing, or a byte now and then, held each for ever. A
  head too slow is refused (408); a body that stalls has its connection closed, which its
  handler reads as the client's disconnection.

It also lets a live stream write its chunks straight to the connection (`WRITE_BODY`), as
uvicorn's own send would write them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from notifications.stream import CONNECTION_ABORT, WRITE_BODY
from utils.config import get_settings

MAX_HEAD_BYTES = 64 * 1024  # as nginx's large_client_header_buffers allows, and more
# A read deadline's callback this late (a share of the deadline) found the loop held.
LATE_FRACTION = 0.2


class _AskingFlowControl(FlowControl):
    """uvicorn's flow control, telling its protocol each time a handler asks for more of a
    body (`receive()` resumes reading, right after sending any `100 Continue`)."""

    def __init__(self, transport: asyncio.Transport, asked: Callable[[], None]) -> None:
        super().__init__(transport)
        self._asked = asked

    def resume_reading(self) -> None:
        super().resume_reading()
        self._asked()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _in_head = True  # a connection starts with a request's head
    _in_body = False
    _head_bytes = 0
    _read_timer: asyncio.TimerHandle | None = None
    _read_due = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_seconds = get_settings().request_read_seconds

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _AskingFlowControl(transport, self._body_asked_for)
        self._await_reading()  # the first request's head, from the connection's opening

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_awaiting()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Counted by the data that reached the parser while a head stayed unfinished: the
        # parser builds a long header's value up itself, and calls back only once it ends.
        # (Data that finishes a head, or begins the next request's, is not counted: a head
        # holds at most the bound and one read more.)
        counted = self._in_head
        super().data_received(data)
        if self.transport.is_closing():
            return
        if counted and self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(400, f"The request head is larger than {MAX_HEAD_BYTES} bytes")
        elif self._in_body:
            answered = self.cycle is not None and self.cycle.response_complete
            if not answered or self._read_timer is None:
                # A body's pause is timed from its last read; the rest of a body already
                # answered (a 413 from its length) is given one deadline in all.
                self._await_reading()
        elif self._read_timer is None and self._between_requests():
            # Bytes that began no request (blank lines, which a parser skips before one), or
            # ended the body of one answered before it was read whole (a 413 from its
            # length): they stopped uvicorn's keep-alive timer; the next head's time runs.
            self._await_reading()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        if self._read_timer is None:  # the first head's time runs from the connection's opening
            self._await_reading()

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body = False, True
        self._await_reading()
        self.scope[CONNECTION_ABORT] = self.transport.abort  # type: ignore[literal-required]
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # (not when upgraded)
            cycle.scope[WRITE_BODY] = partial(self._write_body, cycle)  # type: ignore[literal-required]

    def on_message_complete(self) -> None:
        self._in_body = False
        self._stop_awaiting()
        super().on_message_complete()

    def _write_body(self, cycle: RequestResponseCycle, body: bytes) -> bool:
        """Writes `body` as the next chunk of the cycle's response, as uvicorn's send of a
        body message would, without its message, coroutine and checks: a live stream's
        event goes to thousands of connections in a row. False, nothing written, whenever
        that send would do anything else (wait for a client not reading, drop the write of
        one gone, refuse a response not under way): the caller sends it instead."""
        if (
            cycle is not self.cycle
            or cycle.disconnected
            or self.flow.write_paused
            or not cycle.response_started
            or cycle.response_complete
            or not cycle.chunked_encoding
            or not body
        ):
            return False
        self.transport.write(_as_chunk(body))
        return True

    def _body_asked_for(self) -> None:
        """A client sends the rest of a body once the server asks (a `100 Continue`, or its
        socket read again): its pause is timed from there. A deadline already running could
        otherwise fall just after the ask, before the client could answer it."""
        if self._in_body and self.cycle is not None and not self.cycle.response_complete:
            self._await_reading()

    def _between_requests(self) -> bool:
        """No request is being handled, and nothing times the connection's idling."""
        answered = self.cycle is None or self.cycle.response_complete
        return answered and self.timeout_keep_alive_task is None and not self.pipeline

    def _await_reading(self) -> None:
        self._stop_awaiting()
        self._read_due = self.loop.time() + self._read_seconds
        self._read_timer = self.loop.call_later(self._read_seconds, self._read_too_slowly)

    def _stop_awaiting(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_too_slowly(self) -> None:
        self._read_timer = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # closed, or handed over to another protocol
        waiting_on_us = self.flow.read_paused or (
            self._in_body and self.cycle is not None and self.cycle.waiting_for_100_continue
        )
        # Called late, the loop was held (by a handler, a collection): what the client sent
        # meanwhile may wait unread behind this call. Not the client's delay either.
        held = self.loop.time() - self._read_due > LATE_FRACTION * self._read_seconds
        if waiting_on_us or held:  # the handler has not asked for more yet, or the loop was held
            self._await_reading()
        elif self._in_head and (self.cycle is None or self.cycle.response_complete):
            self._refuse(408, f"The request head took longer than {self._read_seconds:g} s")
        else:
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        self._stop_awaiting()
        body = message.encode("ascii")
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


_last_chunk: tuple[bytes, bytes] = (b"", b"")


def _as_chunk(body: bytes) -> bytes:
    """`body` in HTTP/1.1's chunked coding. The last one framed is kept: a live stream's hub
    writes the same bytes to every connection of a run in turn."""
    global _last_chunk
    last_body, chunk = _last_chunk
    if body is not last_body:
        chunk = b"%x\r\n%b\r\n" % (len(body), body)
        _last_chunk = (body, chunk)
    return chunk
