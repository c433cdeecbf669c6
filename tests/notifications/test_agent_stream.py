"""An agent's steps and a conversation's turns on a run's stream, over real HTTP: each before
its case's result, each documented, and a reconnect from the middle goes on with no gap."""

from __future__ import annotations

import httpx

from tests.database.results.test_agent_runs import MOCKS, TOOLS, _agent
from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Event, check_documented, read_events


async def _stream(live, run_id: str, after: str | None = None) -> list[Event]:
    token = await live.stream_token(run_id)
    headers = {"Last-Event-ID": after} if after is not None else {}
    async with (
        httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
        client.stream(
            "GET", live.events_url(run_id), params={"token": token}, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        return [event async for event in read_events(response) if event.event]


async def test_steps_and_turns_stream_in_order_and_resume_without_a_gap(live):
    with FakeOpenAI(require_api_key="sk-test", reply=_agent) as fake:
        target = await live.openai_model(fake, tools=TOOLS)
        test_set = await live.test_set(
            [
                {"input": "Weather?", "tool_responses": MOCKS},
                {"conversation": {"turns": ["Hi", "Weather?", "Thanks"]}, "tool_responses": MOCKS},
            ]
        )
        metric = await live.metric("tool-args-schema")
        run = await live.run(test_set, target, metric_ids=[metric], concurrency=2)
        events = await _stream(live, run["id"])  # from the start, to the run's end
    check_documented(events)
    kinds = [(event.event, (event.data or {}).get("position")) for event in events]
    steps = [i for i, kind in enumerate(kinds) if kind == ("step.completed", 0)]
    turns = [i for i, kind in enumerate(kinds) if kind == ("turn.completed", 1)]
    assert len(steps) == 2 and max(steps) < kinds.index(("result.recorded", 0))
    assert len(turns) == 3 and max(turns) < kinds.index(("result.recorded", 1))
    assert [events[i].data["turn"] for i in turns] == [1, 2, 3]
    assert events[turns[0]].data["steps"] == 2  # the first turn ran the agent's loop

    first = events[steps[0]]
    resumed = await _stream(live, run["id"], after=first.id)
    assert [e.id for e in resumed] == [e.id for e in events[events.index(first) + 1 :]]
