"""A stream's request that sends a body past the size limit: the stream still ends once its
client leaves (the body's refusal stopped the watch for the client's leaving, and the stream
held its place among the organization's streams to its lifetime's end)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.main import create_app
from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Live
from utils.config import get_settings

LIMIT = 4096


@pytest.fixture
def app() -> Any:
    return create_app(get_settings().model_copy(update={"max_body_bytes": LIMIT}))


@pytest.mark.parametrize("body_bytes", [0, 4 * LIMIT])
async def test_a_stream_ends_when_its_client_leaves_whatever_body_it_sent(
    live: Live, body_bytes: int
) -> None:
    assert live.notifications is not None
    hub = live.notifications.hub
    with FakeOpenAI(require_api_key="sk-test", latency=120) as fake:  # the run stays under way
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": "q"}])
        run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
        token = await live.stream_token(run["id"])
        port = int(live.base_url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET {live.events_url(run['id'])}?token={token} HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        head = b""
        async with asyncio.timeout(30):
            while b"retry:" not in head:
                head += await reader.read(4096)
        chunk = b"x" * 1024
        for _ in range(body_bytes // len(chunk)):
            writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)  # the body read (and refused) while the client stays
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(30):
            while hub.subscriber_count:  # noqa: ASYNC110 (the hub offers no event for it)
                await asyncio.sleep(0.1)
        await live.post(f"/runs/{run['id']}/cancel", {})
