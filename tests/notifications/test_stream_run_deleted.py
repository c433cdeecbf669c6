"""A stream of a run deleted while it is open (its project deleted, say) ends within the
check's interval, saying why, rather than send heartbeats to its lifetime's end."""

from __future__ import annotations

import asyncio

import httpx

from notifications.gone_runs import GONE
from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Live, read_events


async def test_a_stream_of_a_deleted_run_ends_saying_so(live: Live) -> None:
    assert live.notifications is not None
    hub = live.notifications.hub
    assert hub.gone_runs is not None
    hub.gone_runs.every = 0.3
    with FakeOpenAI(require_api_key="sk-test", latency=30) as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": "q0"}])
        run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
        token = await live.stream_token(run["id"])
        comments: list[str] = []
        async with (
            httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
            client.stream("GET", live.events_url(run["id"]), params={"token": token}) as stream,
        ):
            assert stream.status_code == 200
            events = read_events(stream)
            async for event in events:
                if event.event:
                    break  # the run is being watched: now its project goes
            deleted = await live.client.delete(
                f"/api/v1/projects/{live.project_id}", headers=live.account.headers
            )
            assert deleted.status_code == 204, deleted.text
            async with asyncio.timeout(15):
                async for event in events:
                    comments.extend(event.comments)
        assert GONE in comments
    async with asyncio.timeout(10):
        while hub.subscriber_count:  # noqa: ASYNC110 (the hub offers no event to wait on)
            await asyncio.sleep(0.05)
