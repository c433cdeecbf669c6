"""A run watched from its start: every event once, in order, ending with run.finished."""

from __future__ import annotations

import httpx

from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Live, read_events


async def test_a_watched_run_streams_every_event_in_order(live: Live) -> None:
    with FakeOpenAI(require_api_key="sk-test") as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set(
            [{"input": f"q{i}", "expected_output": f"q{i}"} for i in range(30)]
        )
        metric = await live.metric("contains")
        run = await live.run(test_set, target, metric_ids=[metric], concurrency=5)
        token = await live.stream_token(run["id"])
        seen = []
        async with (
            httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
            client.stream("GET", live.events_url(run["id"]), params={"token": token}) as response,
        ):
            assert response.status_code == 200
            async for event in read_events(response):
                if event.event:
                    seen.append(event)
        ids = [int(e.id) for e in seen if e.id is not None]
        assert ids == list(range(1, len(ids) + 1))
        types = [e.event for e in seen]
        assert types[0] == "run.started"
        assert types[-1] == "run.finished"
        assert types.count("result.recorded") == 30
        assert seen[-1].data["done"] == 30
