"""A live stream sends its body chunks straight to the server's own send, past the middleware
(notifications/stream.py): the client still sees the same headers (request id, security
headers, the public app's CORS), every event once and in order, and the middleware still see
the response start and end, with tracing off and on (the request's span ends as a success)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.main import create_app
from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Live, read_events
from utils import tracing
from utils.config import get_settings

ORIGIN = "https://dash.example"
CASES = 6


class BodyProbe:
    """A middleware of the app's own stack: counts the body messages of /public streams."""

    def __init__(self, app: ASGIApp, seen: list[tuple[str, bool]]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/events"):
            await self.app(scope, receive, send)
            return

        async def probe(message: Message) -> None:
            self.seen.append((message["type"], bool(message.get("more_body", False))))
            await send(message)

        await self.app(scope, receive, probe)


@pytest.fixture(params=[False, True], ids=["plain", "traced"])
def app(request, monkeypatch) -> Iterator[Any]:
    spans: InMemorySpanExporter | None = None
    if request.param:
        for name in tracing.STANDARD_ENDPOINTS:
            monkeypatch.delenv(name, raising=False)
        spans = InMemorySpanExporter()
        tracing.configure(None, "assay-test", exporter=spans)
    settings = get_settings().model_copy(update={"cors_origins": [ORIGIN]})
    built = create_app(settings)
    seen: list[tuple[str, bool]] = []
    built.add_middleware(BodyProbe, seen=seen)
    built.state.probe = seen
    built.state.spans = spans
    try:
        yield built
    finally:
        if spans is not None:
            tracing.shutdown()


async def test_a_stream_keeps_its_headers_and_every_event(live: Live, app) -> None:
    with FakeOpenAI(require_api_key="sk-test") as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set(
            [{"input": f"q{i}", "expected_output": f"q{i}"} for i in range(CASES)]
        )
        metric = await live.metric("contains")
        run = await live.run(test_set, target, metric_ids=[metric], concurrency=2)
        token = await live.stream_token(run["id"])
        seen = []
        async with (
            httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
            client.stream(
                "GET",
                live.events_url(run["id"]),
                params={"token": token},
                headers={"X-Request-ID": "stream-probe-1", "Origin": ORIGIN},
            ) as response,
            asyncio.timeout(60),
        ):
            headers = response.headers
            async for event in read_events(response):
                if event.event:
                    seen.append(event)

    assert response.status_code == 200
    assert headers["x-request-id"] == "stream-probe-1"
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert headers["x-accel-buffering"] == "no"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    # The public app's own CORS answers (any origin: a stream's credential is in its URL, never
    # a cookie), the same for an origin the API lists (ASSAY_CORS_ORIGINS) as for any other,
    # as it answers the preflights of /public.
    assert headers["access-control-allow-origin"] == "*"
    assert headers["access-control-expose-headers"] == "X-Request-ID, Retry-After"
    assert {token.strip() for token in headers["vary"].split(",")} == {"Origin"}

    ids = [int(e.id) for e in seen if e.id is not None]
    assert ids == list(range(1, len(ids) + 1))
    types = [e.event for e in seen]
    assert types[0] == "run.started" and types[-1] == "run.finished"
    assert types.count("result.recorded") == CASES

    # The middleware saw the start and the last body, and none of the chunks between.
    assert app.state.probe == [("http.response.start", False), ("http.response.body", False)]

    spans: InMemorySpanExporter | None = app.state.spans
    if spans is not None:
        await asyncio.sleep(0.2)  # the span ends as the server's send of the last body returns
        [span] = [
            s
            for s in spans.get_finished_spans()
            if s.kind == SpanKind.SERVER
            and str((s.attributes or {}).get("url.path")).endswith("/events")
        ]
        attributes = dict(span.attributes or {})
        assert attributes["http.response.status_code"] == 200
        assert "error.type" not in attributes
        assert span.status.status_code != StatusCode.ERROR
