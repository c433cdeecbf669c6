"""uvicorn's HTTP protocol (httptools) with a bound on a request's head: its line and headers
together at most MAX_HEAD_BYTES. httptools keeps every header it is sent, without end, before
any of the service's code runs: three connections sending 100 MB of headers each held 300 MB
of the server's memory, no credential needed. A head past the bound is refused (400) and its
connection closed."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # as nginx's large_client_header_buffers allows, and more


class HeadTooLarge(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        # Raised inside the parser's callback, it fails the parse: uvicorn answers 400 and
        # closes the connection.
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge(f"the request's head is larger than {MAX_HEAD_BYTES} bytes")
