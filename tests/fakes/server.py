"""Shared base of the fake servers: a Starlette app served by uvicorn on 127.0.0.1 (free port)
in a background thread with its own event loop, plus request recording and scripted faults.

Tests configure a running fake from their own thread; the queue of faults and the records are
guarded by a lock, and plain attributes (latency, reply, ...) are read at request time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Fault:
    """What the fake does instead of answering one request (build with the class methods)."""

    kind: Literal["status", "hang", "close", "malformed", "stall"]
    status: int = 500
    body: Any = None  # None: the fake's default error body; str: sent as text; else JSON
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 30.0  # how long "hang" waits before dropping the connection

    @classmethod
    def http(
        cls,
        status: int,
        body: Any = None,
        *,
        retry_after: float | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        """Answer `status` with `body` (default: the fake's error shape) and extra headers."""
        all_headers = dict(headers or {})
        if retry_after is not None:
            all_headers["retry-after"] = str(retry_after)
        return cls("status", status=status, body=body, headers=all_headers)

    @classmethod
    def hang(cls, seconds: float = 30.0) -> Fault:
        """Answer nothing for `seconds` (cut short by stop()), then drop the connection."""
        return cls("hang", seconds=seconds)

    @classmethod
    def stall(cls, status: int = 200, seconds: float = 30.0) -> Fault:
        """Answer `status` and the start of a body, then nothing more for `seconds`."""
        return cls("stall", status=status, seconds=seconds)

    @classmethod
    def close(cls) -> Fault:
        """Drop the connection without sending any response."""
        return cls("close")

    @classmethod
    def malformed(cls) -> Fault:
        """Answer 200 with a body that is not valid JSON."""
        return cls("malformed")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    text: str
    json: Any  # the parsed body, None when it is empty or not JSON


def count_tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: one token per whitespace-separated word."""
    return len(text.split())


class FakeServer:
    """Base class: subclasses implement `build_app()` and may override `error_response()`."""

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency  # seconds to wait before answering (faults included)
        self.host = HOST  # another loopback address (127.0.0.2) may be set before start()
        self.port = 0  # a free one unless set before start()
        self._lock = threading.Lock()
        self._faults: deque[Fault | None] = deque()
        self._requests: list[RecordedRequest] = []
        self._billed: list[tuple[int, int]] = []  # (input, output) tokens of each answer
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    # -- to implement -------------------------------------------------------------------------

    def build_app(self) -> Starlette:
        raise NotImplementedError

    def error_response(self, status: int) -> Response:
        return JSONResponse({"error": f"fake error {status}"}, status_code=status)

    # -- test-side API ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def billed(self) -> list[tuple[int, int]]:
        """The usage each answer reported, (input tokens, output tokens), in order."""
        with self._lock:
            return list(self._billed)

    def bill(self, input_tokens: int, output_tokens: int) -> None:
        with self._lock:
            self._billed.append((input_tokens, output_tokens))

    def enqueue(self, *faults: Fault | None) -> None:
        """Script the next requests: each takes one entry; None means answer normally."""
        with self._lock:
            self._faults.extend(faults)

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def reset(self) -> None:
        """Forget scripted faults and recorded requests."""
        with self._lock:
            self._faults.clear()
            self._requests.clear()
            self._billed.clear()

    def start(self) -> Self:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        app = self.build_app()

        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            # uvicorn's `send` is a method of the request cycle, which owns the transport:
            # keep it so that faults can drop the connection without answering.
            scope["fake.cycle"] = getattr(send, "__self__", None)
            await app(scope, receive, send)

        config = uvicorn.Config(
            asgi,
            interface="asgi3",
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=self._run, args=(server, sock), name=f"{type(self).__name__}:{self.port}"
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        thread, server, loop, stopping = self._thread, self._server, self._loop, self._stopping
        self._thread = self._server = self._loop = self._stopping = None
        if thread is None or server is None:
            return
        server.should_exit = True
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(stopping.set)  # wakes hanging handlers
        thread.join(5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- server side (runs in the server thread) ----------------------------------------------

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            await server.serve(sockets=[sock])

        try:
            asyncio.run(serve())
        finally:
            sock.close()

    async def record(self, request: Request) -> RecordedRequest:
        text = (await request.body()).decode(errors="replace")
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers=dict(request.headers),
            text=text,
            json=body,
        )
        with self._lock:
            self._requests.append(recorded)
        return recorded

    def next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    async def sleep(self, seconds: float) -> None:
        """Sleep, but return at once when the server is stopping."""
        if seconds > 0 and self._stopping is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)

    async def drop_connection(self, request: Request) -> Response:
        cycle = request.scope.get("fake.cycle")
        transport = getattr(cycle, "transport", None)
        if transport is None:
            raise RuntimeError("cannot reach the connection to drop it")
        transport.close()
        for _ in range(100):  # uvicorn ignores what is sent once it has seen the disconnect
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0.001)
        return Response()

    async def fault_response(self, request: Request, fault: Fault, malformed: Response) -> Response:
        if fault.kind == "hang":
            await self.sleep(fault.seconds)
            return await self.drop_connection(request)
        if fault.kind == "close":
            return await self.drop_connection(request)
        if fault.kind == "malformed":
            return malformed
        if fault.kind == "stall":

            async def started_then_stalled() -> AsyncIterator[bytes]:
                yield b"ok"
                await self.sleep(fault.seconds)

            headers = {"content-length": "100"}
            return StreamingResponse(started_then_stalled(), fault.status, headers=headers)
        if fault.body is None:
            response = self.error_response(fault.status)
        elif isinstance(fault.body, str):
            response = Response(fault.body, fault.status, media_type="text/plain")
        else:
            response = JSONResponse(fault.body, fault.status)
        response.headers.update(fault.headers)
        return response
