"""A gated run's stream carries its verdict right after run.finished, live and replayed; a run
given more repetitions streams its second round after its first end."""

from __future__ import annotations

import asyncio

import httpx

from tasks.worker import WorkerPool
from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Live, check_documented, read_events


async def _watch(live: Live, run_id: str, **params: str) -> list:
    token = await live.stream_token(run_id)
    seen = []
    async with (
        httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
        client.stream(
            "GET", live.events_url(run_id), params={"token": token}, headers=params
        ) as response,
    ):
        assert response.status_code == 200
        async for event in read_events(response):
            if event.event:
                seen.append(event)
    return seen


async def test_the_verdict_follows_the_end_live_and_replayed(live: Live) -> None:
    with FakeOpenAI(require_api_key="sk-test", latency=0.02) as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set(
            [{"input": f"q{i}", "expected_output": f"q{i}"} for i in range(10)]
        )
        metric = await live.metric("contains")
        run = await live.run(
            test_set, target, metric_ids=[metric], concurrency=2, gate={"min_pass_rate": 0.9}
        )
        seen = await _watch(live, run["id"])
        types = [e.event for e in seen]
        assert types[-2:] == ["run.finished", "run.verdict"]
        assert seen[-1].data["status"] == "passed"
        assert int(seen[-1].id) == int(seen[-2].id) + 1

        replayed = await _watch(live, run["id"], **{"Last-Event-ID": str(int(seen[-3].id))})
        assert [e.event for e in replayed] == ["run.finished", "run.verdict"]

        repeated = await live.post(
            f"/runs/{run['id']}/repeat", {"repetitions": 1, "cases": "all"}, expect=202
        )
        assert repeated.json()["status"] == "queued"
        second = await _watch(live, run["id"], **{"Last-Event-ID": seen[-1].id})
        second_types = [e.event for e in second]
        assert second_types[0] == "run.started" and second_types[-1] == "run.verdict"
        assert second_types.count("result.recorded") == 10
        # Replayed from the start, the stream goes on past the first end.
        whole = await _watch(live, run["id"])
        assert [e.event for e in whole].count("run.verdict") == 2
        check_documented(whole)


async def test_a_stream_opened_while_a_repeat_waits_goes_on_past_the_first_end(
    live: Live, monkeypatch
) -> None:
    """The run is queued again, its second round not begun: a stream opened from the start
    replays the first round's end and stays open for the second (it ended there)."""
    with FakeOpenAI(require_api_key="sk-test", latency=0.01) as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": f"q{i}"} for i in range(3)])
        run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
        await live.wait(run["id"])
        claim_room = WorkerPool._room
        monkeypatch.setattr(WorkerPool, "_room", lambda self: (0, []))  # nothing is claimed
        repeated = await live.post(
            f"/runs/{run['id']}/repeat", {"repetitions": 1, "cases": "all"}, expect=202
        )
        assert repeated.json()["status"] == "queued"
        watching = asyncio.create_task(_watch(live, run["id"]))
        await asyncio.sleep(1.0)
        assert not watching.done(), "the stream ended at the first round's end"
        monkeypatch.setattr(WorkerPool, "_room", claim_room)
        async with asyncio.timeout(60):
            whole = await watching
    types = [e.event for e in whole]
    assert types.count("run.started") == 2 and types.count("run.finished") == 2
    assert types[-1] == "run.finished"
    assert [int(e.id) for e in whole] == list(range(1, len(whole) + 1))
