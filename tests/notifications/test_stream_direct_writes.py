"""A live stream's hub writes each event straight to the connection, past the server's send
(app/http_protocol.py, `WRITE_BODY`): the client still reads every event once, in order, in
well-formed chunks, and only what the stream's own task sends (its first line, its replay,
its end) goes through the send."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.main import create_app
from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Live, read_events
from utils.config import get_settings

CASES = 8
_ID = re.compile(rb"^id: (\d+)$", re.MULTILINE)


class ServerSendProbe:
    """Outside the whole app: the ids of the events each stream hands the server's send."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.sent_ids: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/events"):
            await self.app(scope, receive, send)
            return

        async def probe(message: Message) -> None:
            if message["type"] == "http.response.body":
                self.sent_ids += [int(seq) for seq in _ID.findall(message.get("body", b""))]
            await send(message)

        await self.app(scope, receive, probe)


@pytest.fixture
def app() -> Any:
    return ServerSendProbe(create_app(get_settings()))


async def test_the_hub_writes_events_to_the_connection_and_the_client_reads_each_once(
    live: Live, app: ServerSendProbe
) -> None:
    with FakeOpenAI(require_api_key="sk-test", latency=0.15) as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": f"q{i}"} for i in range(CASES)])
        run = await live.run(test_set, target, metric_ids=[await live.any_answer()], concurrency=1)
        token = await live.stream_token(run["id"])
        ids: list[int] = []
        types: list[str] = []
        async with (
            httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
            client.stream("GET", live.events_url(run["id"]), params={"token": token}) as response,
            asyncio.timeout(60),
        ):
            async for event in read_events(response):
                if event.id is not None and event.event:
                    ids.append(int(event.id))
                    types.append(event.event)

    assert ids == list(range(1, len(ids) + 1))
    assert types[-1] == "run.finished"
    assert types.count("result.recorded") == CASES
    # The events the client read that no send carried: the hub wrote them itself.
    written_directly = set(ids) - set(app.sent_ids)
    assert len(written_directly) >= CASES // 2, (ids, app.sent_ids)
    assert sorted(app.sent_ids) == sorted(set(app.sent_ids))  # nothing sent both ways
