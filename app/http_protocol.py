"""uvicorn's HTTP protocol (httptools) with a bound on a request's head: at most some
MAX_HEAD_BYTES received while a request's line and headers are unfinished. httptools keeps
every header it is sent, and a header's value however long it grows, before any of the
service's code runs: three connections sending 100 MB of headers each held 300 MB of the
server's memory, no credential needed. A head past the bound is refused (400) and its
connection closed."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # as nginx's large_client_header_buffers allows, and more


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _in_head = True  # a connection starts with a request's head
    _head_bytes = 0

    def data_received(self, data: bytes) -> None:
        # Counted by the data that reached the parser while a head stayed unfinished: the
        # parser builds a long header's value up itself, and calls back only once it ends.
        # (Data that finishes a head, or begins the next request's, is not counted: a head
        # holds at most the bound and one read more.)
        counted = self._in_head
        super().data_received(data)
        if counted and self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self.send_400_response(f"The request head is larger than {MAX_HEAD_BYTES} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
