"""A proxy between the command and the real server, as a CI job often has one: it forwards
every request (buffered: only answers that end pass through, such as a finished run's event
stream) except those whose path a test gives another answer: a page that is no event stream,
a stream that says nothing, a stream held open, a download cut short."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from notifications.frames import HEARTBEAT

# Not forwarded either way: the hop's own, or recomputed for the buffered body.
HOP_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "host",
}
EVENTS = r"/public/runs/[^/]+/events"
EXPORT = r"/api/v1/runs/[^/]+/export"

Answer = Callable[["Handler"], None]


class Proxy:
    def __init__(self, target: str) -> None:
        self.upstream = httpx.Client(base_url=target, timeout=60)
        self.answers: list[tuple[re.Pattern[str], Answer]] = []
        self.answered: list[str] = []  # the paths given another answer, in order
        self.closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, path_pattern: str, answer: Answer) -> None:
        self.answers.append((re.compile(path_pattern), answer))

    def until_answered(
        self, process: subprocess.Popen[str], what: str, path: str | None = None
    ) -> None:
        """Waits (30 s at most, the command still running) until a request was given its other
        answer (one to `path`, if given); `what` says what never came."""
        deadline = time.monotonic() + 30
        while not (path in self.answered if path is not None else self.answered):
            assert time.monotonic() < deadline and process.poll() is None, what
            time.sleep(0.05)

    def __enter__(self) -> Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
        self.upstream.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: Proxy


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        proxy = self.server.proxy
        path = self.path.partition("?")[0]
        for pattern, answer in proxy.answers:
            if pattern.fullmatch(path):
                proxy.answered.append(path)
                self.close_connection = True
                answer(self)
                return
        self.relay()

    def relay(self) -> None:
        """The server's own answer, passed on."""
        upstream = self.forward()
        self.send_response(upstream.status_code)
        for name, value in upstream.headers.multi_items():
            if name.lower() not in HOP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(upstream.content)))
        self.end_headers()
        self.wfile.write(upstream.content)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def forward(self) -> httpx.Response:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        return self.server.proxy.upstream.request(
            self.command, self.path, headers=headers, content=body
        )

    def send_whole(self, content_type: str, body: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def first(times: int, answer: Answer) -> Answer:
    """`answer` for the first `times` requests, then the server's own answers."""
    left = [times]

    def answered(handler: Handler) -> None:
        if left[0] <= 0:
            handler.relay()
            return
        left[0] -= 1
        answer(handler)

    return answered


def unavailable(times: int, status: int = 503, retry_after: str | None = None) -> Answer:
    """503 (a problem, as a restarting server's proxy says) the first `times` requests, then
    the server's own answers; or another status, with a Retry-After."""

    def refuse(handler: Handler) -> None:
        body = b'{"title": "Refused", "status": %d}' % status
        handler.send_response(status)
        handler.send_header("Content-Type", "application/problem+json")
        handler.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            handler.send_header("Retry-After", retry_after)
        handler.end_headers()
        handler.wfile.write(body)

    return first(times, refuse)


def sign_in_page(handler: Handler) -> None:
    """A 200 that is no event stream: what a proxy asking to sign in sends."""
    handler.send_whole("text/html; charset=utf-8", b"<html><body>Please sign in</body></html>")


def empty_stream(handler: Handler) -> None:
    """A 200 event stream that ends at once with no event in it."""
    handler.send_whole("text/event-stream", b"retry: 100\n\n")


def held_stream(handler: Handler) -> None:
    """A 200 event stream held open with heartbeats (and no event) until the proxy closes."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Connection", "close")
    handler.end_headers()
    try:
        while not handler.server.proxy.closing.wait(1.0):
            handler.wfile.write(HEARTBEAT.encoded)
            handler.wfile.flush()
    except OSError:
        pass  # the command went away


def short_streams(times: int, seconds: float = 0.5) -> Answer:
    """The first `times` streams: a heartbeat, held `seconds`, then closed (a proxy cutting
    streams short); then the server's own."""

    def short(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(HEARTBEAT.encoded)
        handler.wfile.flush()
        handler.server.proxy.closing.wait(seconds)

    return first(times, short)


def answer_lost(times: int) -> Answer:
    """The first `times` requests reach the server, and its answer is lost (the connection
    dropped); then the server's own answers."""

    def lose(handler: Handler) -> None:
        handler.forward()
        handler.connection.shutdown(socket.SHUT_RDWR)

    return first(times, lose)


def held_answer(seconds: float) -> Answer:
    """The server's answer, passed on `seconds` after it came."""

    def hold(handler: Handler) -> None:
        upstream = handler.forward()
        handler.server.proxy.closing.wait(seconds)
        handler.send_whole(upstream.headers.get("content-type", ""), upstream.content)

    return hold


def cut_short(handler: Handler) -> None:
    """The server's answer, chunked, with the connection dropped after half of it (no last
    chunk): what a dropped connection mid-download looks like."""
    upstream = handler.forward()
    half = upstream.content[: len(upstream.content) // 2]
    handler.send_response(upstream.status_code)
    handler.send_header("Content-Type", upstream.headers.get("content-type", ""))
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    handler.wfile.write(b"%x\r\n%b\r\n" % (len(half), half))
    handler.wfile.flush()
    handler.connection.shutdown(socket.SHUT_RDWR)
