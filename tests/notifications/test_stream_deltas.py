"""Streamed answers reach a run's live stream as output.delta / evaluation.delta events: live
only (never stored, never replayed), each carrying the id of the last stored event."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI, RecordedRequest
from tests.fakes.server import Fault
from tests.helpers import assert_problem
from tests.notifications.conftest import Event, Live, check_documented, read_events

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa"


class GatedOpenAI(FakeOpenAI):
    """Holds every answer until `gate` is set: the test subscribes to the stream first, so
    that it sees every delta of every case."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = threading.Event()

    async def sleep(self, seconds: float) -> None:
        if not self.gate.is_set():
            await asyncio.to_thread(self.gate.wait, 30)
        await super().sleep(seconds)


class GatedAnthropic(FakeAnthropic):
    """The Anthropic Messages API (called through pydantic-ai), gated as `GatedOpenAI`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = threading.Event()

    async def sleep(self, seconds: float) -> None:
        if not self.gate.is_set():
            await asyncio.to_thread(self.gate.wait, 30)
        await super().sleep(seconds)


class IgnoresStreamOpenAI(FakeOpenAI):
    """A server that does not stream: it answers a streamed request with a whole completion."""

    async def record(self, request: Request) -> RecordedRequest:
        recorded = await super().record(request)  # kept as sent (stream: true)
        body = recorded.json
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        return dataclasses.replace(recorded, json=body)


VERDICT = '{"score": 0.9, "reason": "relevant and clear enough"}'


async def _slow_judge_metric(live: Live, judge_fake: FakeOpenAI) -> str:
    """A judge metric whose (non-streaming) judge answers after its latency: the case's
    result is recorded well after its streamed text has ended."""
    judge = await live.openai_model(judge_fake)
    body = {
        "project_id": live.project_id,
        "name": f"slow-{uuid.uuid4().hex[:6]}",
        "type": "llm-rubric",
        "parameters": {"criteria": "Answers the question"},
        "judge_model_id": judge,
    }
    return str((await live.post("/metrics", body, expect=201)).json()["id"])


async def _listening(live: Live) -> None:
    assert live.notifications is not None
    await asyncio.wait_for(live.notifications.listener.connected.wait(), 10)


async def _watch(live: Live, run_id: str, fake: GatedOpenAI | GatedAnthropic) -> list[Event]:
    """Every event of the run from its start; opens the fake's gate once subscribed."""
    token = await live.stream_token(run_id)
    seen: list[Event] = []
    try:
        async with (
            httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
            client.stream("GET", live.events_url(run_id), params={"token": token}) as response,
        ):
            assert response.status_code == 200
            async with asyncio.timeout(60):
                async for event in read_events(response):
                    fake.gate.set()  # the first item (retry:) comes after the subscription
                    if event.event:
                        seen.append(event)
    finally:
        fake.gate.set()
    assert seen and seen[-1].event == "run.finished", [e.event for e in seen]
    return seen


def _check_delta_ids(seen: list[Event], kind: str) -> None:
    """A delta's id is the id of the last stored event before it (0 before any)."""
    last = 0
    deltas = 0
    for event in seen:
        if event.event == kind:
            deltas += 1
            assert event.id == str(last), (event.id, last)
        else:
            assert event.id is not None and int(event.id) == last + 1
            last = int(event.id)
    assert deltas > 0


@contextmanager
def _streaming_target_and_slow_judge() -> Iterator[tuple[GatedOpenAI, FakeOpenAI]]:
    """A target that streams `<input>: WORDS` a token at a time, and a judge that takes a
    second to answer (so the run outlives its last tokens)."""
    with (
        GatedOpenAI(
            require_api_key="sk-test",
            chunk_delay=0.03,
            reply=lambda body: f"{body['messages'][-1]['content']}: {WORDS}",
        ) as fake,
        FakeOpenAI(require_api_key="sk-test", latency=1.0, reply=lambda b: VERDICT) as slow,
    ):
        yield fake, slow


async def test_a_streaming_target_sends_output_deltas_live_only(live: Live) -> None:
    await _listening(live)
    with _streaming_target_and_slow_judge() as (fake, slow):
        target = await live.openai_model(fake, stream=True)
        cases = 3
        test_set = await live.test_set(
            [{"input": f"q{i}", "expected_output": f"q{i}"} for i in range(cases)]
        )
        metrics = [await live.metric("contains"), await _slow_judge_metric(live, slow)]
        run = await live.run(test_set, target, metric_ids=metrics, concurrency=cases)
        seen = await _watch(live, run["id"], fake)
        assert all(r.json.get("stream") is True for r in fake.requests if r.json)

    deltas: dict[int, list[str]] = defaultdict(list)
    recorded: dict[int, str] = {}
    for event in seen:
        if event.event == "output.delta":
            position = event.data["position"]
            assert event.data["repetition"] == 0
            assert set(event.data) == {"position", "repetition", "text"}
            assert position not in recorded, f"a delta of case {position} after its result"
            deltas[position].append(event.data["text"])
        elif event.event == "result.recorded":
            recorded[event.data["position"]] = event.data["output"]
    assert sorted(recorded) == list(range(cases))
    results = {r["position"]: r for r in await live.results(run["id"])}
    for position, output in recorded.items():
        assert output == f"q{position}: {WORDS}"
        assert results[position]["output"] == output
        assert len(deltas[position]) >= 2  # tokens arrived over time, in several deltas
        assert "".join(deltas[position]) == output
    _check_delta_ids(seen, "output.delta")
    check_documented(seen)

    # Deltas are not stored: a replay of the ended run has every stored event and no delta.
    token = await live.stream_token(run["id"])
    async with (
        httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
        client.stream("GET", live.events_url(run["id"]), params={"token": token}) as response,
    ):
        replay = [e async for e in read_events(response) if e.event]
    assert [e.event for e in replay] == [e.event for e in seen if e.event != "output.delta"]
    assert not any(e.event.endswith(".delta") for e in replay if e.event)


@contextmanager
def _streaming_judge(provider: str) -> Iterator[GatedOpenAI | GatedAnthropic]:
    """A judge answering VERDICT a token at a time: over the OpenAI wire format, or through
    pydantic-ai (Anthropic's Messages API)."""
    fake: GatedOpenAI | GatedAnthropic
    if provider == "anthropic":
        fake = GatedAnthropic(require_api_key="sk-test", chunk_delay=0.03, reply=lambda b: VERDICT)
    else:
        fake = GatedOpenAI(require_api_key="sk-test", chunk_delay=0.03, reply=lambda b: VERDICT)
    with fake:
        yield fake


async def _judge_model(live: Live, fake: GatedOpenAI | GatedAnthropic) -> str:
    if isinstance(fake, GatedAnthropic):
        return await live.model(
            provider="anthropic",
            model="claude-fake-1",
            base_url=fake.url,
            api_key="sk-test",
            stream=True,
        )
    return await live.openai_model(fake, stream=True)


@pytest.mark.parametrize("provider", ["openai-compatible", "anthropic"])
async def test_a_streaming_judge_sends_evaluation_deltas(live: Live, provider: str) -> None:
    await _listening(live)
    verdict = VERDICT
    with (
        _streaming_judge(provider) as fake,
        FakeOpenAI(require_api_key="sk-test", latency=1.0, reply=lambda b: verdict) as slow,
    ):
        target = await live.model(provider="demo")
        judge = await _judge_model(live, fake)
        name = f"rubric-{uuid.uuid4().hex[:6]}"
        body = {
            "project_id": live.project_id,
            "name": name,
            "type": "llm-rubric",
            "parameters": {"criteria": "Answers the question"},
            "judge_model_id": judge,
        }
        metric = (await live.post("/metrics", body, expect=201)).json()["id"]
        cases = 2
        test_set = await live.test_set([{"input": f"q{i}"} for i in range(cases)])
        # A second, slow judge of the same cases keeps each result back until well after the
        # streaming judge has ended.
        metrics = [metric, await _slow_judge_metric(live, slow)]
        run = await live.run(test_set, target, metric_ids=metrics, concurrency=cases)
        seen = await _watch(live, run["id"], fake)
        assert all(r.json.get("stream") is True for r in fake.requests if r.json)
    check_documented(seen)

    deltas: dict[int, list[str]] = defaultdict(list)
    recorded: set[int] = set()
    for event in seen:
        if event.event == "evaluation.delta":
            assert event.data["metric"] == name
            assert event.data["repetition"] == 0
            assert event.data["position"] not in recorded, "a judge delta after its result"
            deltas[event.data["position"]].append(event.data["text"])
        elif event.event == "result.recorded":
            recorded.add(event.data["position"])
        assert event.event != "output.delta"  # the demo target does not stream
    assert sorted(deltas) == list(range(cases)) == sorted(recorded)
    for texts in deltas.values():
        assert len(texts) >= 2
        assert "".join(texts) == verdict
    _check_delta_ids(seen, "evaluation.delta")
    for result in await live.results(run["id"]):
        [evaluation] = [e for e in result["evaluations"] if e["metric_name"] == name]
        assert evaluation["score"] == 0.9 and evaluation["reason"] == "relevant and clear enough"


async def test_stream_is_refused_for_configurations_that_cannot_stream(live: Live) -> None:
    """The demo provider does not stream, nor an http target without a stream_path."""
    for config in (
        {
            "provider": "http",
            "http": {"url": "https://app.example.com/chat", "response_path": "$.answer"},
        },
        {"provider": "demo"},
    ):
        body = {"name": f"model-{uuid.uuid4().hex[:6]}", "stream": True, **config}
        response = await live.post("/models", body)
        assert_problem(response, 422, field="stream")
        # The same configuration without streaming is fine, but cannot be switched to it.
        body = {**body, "stream": False, "name": f"model-{uuid.uuid4().hex[:6]}"}
        created = (await live.post("/models", body, expect=201)).json()
        assert created["stream"] is False
        patched = await live.client.patch(
            f"/api/v1/models/{created['id']}", json={"stream": True}, headers=live.account.headers
        )
        assert_problem(patched, 422, field="stream")


async def test_a_server_that_ignores_stream_still_answers(live: Live) -> None:
    with IgnoresStreamOpenAI(require_api_key="sk-test") as fake:
        target = await live.openai_model(fake, stream=True)
        test_set = await live.test_set([{"input": "hello", "expected_output": "hello"}])
        metric = await live.metric("contains")
        run = await live.run(test_set, target, metric_ids=[metric])
        done = await live.wait(run["id"])
        assert fake.requests and fake.requests[0].json["stream"] is True
    assert done["status"] == "completed"
    assert done["counts"]["passed"] == 1
    [result] = await live.results(run["id"])
    assert result["status"] == "passed" and result["output"] == "echo: hello"


async def test_a_retried_streamed_call_starts_its_text_over(live: Live) -> None:
    """The first call fails (503) and is retried: before the retry's tokens comes a delta with
    `reset: true`, and the text after the last reset is exactly the recorded output."""
    await _listening(live)
    with _streaming_target_and_slow_judge() as (fake, slow):
        fake.enqueue(Fault.http(503))
        target = await live.openai_model(fake, stream=True)
        test_set = await live.test_set([{"input": "q0", "expected_output": "q0"}])
        metrics = [await _slow_judge_metric(live, slow)]
        run = await live.run(test_set, target, metric_ids=metrics, concurrency=1)
        seen = await _watch(live, run["id"], fake)
    deltas = [e.data for e in seen if e.event == "output.delta"]
    resets = [index for index, delta in enumerate(deltas) if delta.get("reset")]
    assert resets, deltas
    after_reset = "".join(delta["text"] for delta in deltas[resets[-1] :])
    recorded = next(e.data for e in seen if e.event == "result.recorded")
    assert recorded["status"] == "passed"
    assert after_reset == recorded["output"] == f"q0: {WORDS}"
