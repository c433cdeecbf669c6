"""Pure-ASGI middleware of the request path: request id, security headers, body-size limit,
the API's CORS; and the app class that records the server's own send for the live streams."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import ClassVar

import structlog
from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import problem
from notifications.stream import SERVER_SEND
from utils.metrics import metrics

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = structlog.get_logger("assay.request")
# structlog runs its processors before the standard library's level filters the line out:
# asking the level first spares every request that work when requests are not logged.
_request_log_level = logging.getLogger("assay.request")


class ServerSendApp(FastAPI):
    """FastAPI, recording the server's own `send` in each request's scope before any layer
    (its telemetry, its error middleware, ours) wraps it: a live stream sends its body chunks
    there (notifications/stream.py), its start and end through the middleware as any response.

    So no middleware here may change, buffer or count a response's body messages: each sees
    a stream's start and its last body only. With tracing on, the request's span (FastAPI's
    telemetry) takes its status from the start and ends with the last body, as before; the
    contrib OpenTelemetry ASGI middleware, if ever added inside, would only lose its
    per-chunk `http send` spans."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[SERVER_SEND] = send
        await super().__call__(scope, receive, send)


class RequestIdMiddleware:
    """Takes X-Request-ID (or makes one), binds it to every log line, echoes it back.

    The id stays bound after the response: an unexpected error is logged by the app's
    outermost error handler and by the server once this middleware has returned. The server
    runs each request in a task of its own, whose context ends with it; clearing the context
    when a request starts covers callers that reuse one context for several requests.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = (
            incoming if incoming and _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        )
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            if _request_log_level.isEnabledFor(logging.INFO):
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round(elapsed * 1000, 1),
                )
            _measure(scope, status, elapsed)


def _measure(scope: Scope, status: int, elapsed: float) -> None:
    """Counts the request under its route's template (never its path: ids would make every
    request a series of its own); a request no route matched is `unmatched`."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) if isinstance(route, Route) else None
    # A mount's catch-all, or a path parameter that spans segments, would put the caller's
    # own path in the label.
    if template is None or ":path}" in template:
        template = "unmatched" if status == 404 else "other"
    else:
        # The route knows its path below the prefixes it was included under (/api/v1, the
        # /public mount): those are the request path's leading segments.
        segments = scope["path"].split("/")
        prefix = segments[: len(segments) - template.count("/")]
        template = "/".join(prefix) + template
    method = scope["method"]
    into = metrics()
    into.http_requests.labels(method, template, str(status)).inc()
    into.http_duration.labels(method, template).observe(elapsed)


class SecurityHeadersMiddleware:
    HEADERS: ClassVar[dict[str, str]] = {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
    }

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.HEADERS.items():
                    headers.setdefault(name, value)
                if scope.get("scheme") == "https":
                    headers.setdefault("Strict-Transport-Security", "max-age=31536000")
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ApiCorsMiddleware(CORSMiddleware):
    """CORS for the configured origins (ASSAY_CORS_ORIGINS), on every path but those of a
    mounted app with CORS of its own (`passes`): the public app answers any origin, and lets
    a stream be resumed with Last-Event-ID. Answered here too, its preflights would be
    refused for an origin not in the list, or for asking to send that header."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        passes: str,
        allow_origins: Sequence[str],
        allow_methods: Sequence[str],
        allow_headers: Sequence[str],
        expose_headers: Sequence[str],
    ) -> None:
        super().__init__(
            app,
            allow_origins=allow_origins,
            allow_methods=allow_methods,
            allow_headers=allow_headers,
            expose_headers=expose_headers,
        )
        self.passes = passes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "").removeprefix(scope.get("root_path", ""))
        if path == self.passes or path.startswith(self.passes + "/"):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class BodySizeLimitMiddleware:
    """Refuses bodies above the limit with 413, by Content-Length or while streaming in; a
    test-set import's up to its own (larger) limit, which its route holds it to."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self.default_bytes = max_bytes
        self.upload_bytes = max(max_bytes, upload_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = _UPLOAD.fullmatch(scope["path"]) is not None
        limit = self.upload_bytes if upload else self.default_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, send, limit)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises HTTPException from body parsing; the app's handler
                    # renders it as problem+json.
                    raise HTTPException(413, _too_large(limit))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as exc:
            if exc.status_code != 413 or response_started:
                raise
            await self._reject(scope, send, limit)

    async def _reject(self, scope: Scope, send: Send, limit: int) -> None:
        response = problem(Request(scope), 413, _too_large(limit))
        await response(scope, _no_receive, send)


# The one route that takes a file (its own limit, ASSAY_IMPORT_MAX_BYTES, is the route's).
_UPLOAD = re.compile(r"/api/v1/test-sets/[^/]+/import")


def _too_large(limit: int) -> str:
    return f"The request body is larger than the limit of {limit} bytes"


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None
