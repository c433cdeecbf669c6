"""Agents in runs: the engine runs the loop with the test's mocked tools, through real HTTP to
fakes speaking OpenAI's and Anthropic's wire formats; the trajectory is stored, scored and
streamed step by step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from app.engine import agent
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeToolCall, FakeToolCalls
from tests.fakes.server import Fault
from tests.helpers import assert_problem

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    },
]
MOCKS = [
    {"name": "get_weather", "arguments": {"city": "Paris"}, "response": {"temp_c": 18}},
    {"name": "get_weather", "response": {"temp_c": 0}},
    {"name": "lookup", "response": "umbrella: yes"},
]
EXPECTED = [
    {"name": "get_weather", "arguments": {"city": "Paris"}},
    {"name": "lookup", "arguments": {"type": "object", "required": ["query"]}, "match": "schema"},
]


def _agent(request: dict[str, Any]) -> str | FakeToolCalls:
    """Calls both tools first; answers from their results once it has them."""
    results = [m for m in request["messages"] if m["role"] == "tool"]
    if not results:
        return FakeToolCalls(
            [
                FakeToolCall("get_weather", {"city": "Paris"}),
                FakeToolCall("lookup", {"query": "umbrella"}),
            ]
        )
    return "It is " + " and ".join(m["content"] for m in results)


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(require_api_key="sk-ant-test") as server:
        yield server


async def _metrics(lab) -> list[str]:
    return [
        await lab.metric("trajectory", parameters={"mode": "in-order"}),
        await lab.metric("tool-call"),
        await lab.metric("tool-args-schema"),
        await lab.metric("step-count", parameters={"max": 2}),
        await lab.metric("contains", parameters={"value": "temp_c"}),
    ]


async def _events(owner_engine, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with owner_engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT type, data FROM run_events WHERE run_id = :id ORDER BY seq"),
            {"id": run_id},
        )
        return [(kind, data) for kind, data in rows.all()]


async def test_a_two_tool_loop_with_mocks_is_stored_scored_and_streamed(lab, fake, owner_engine):
    fake.reply = _agent
    target = await lab.openai_model(fake, tools=TOOLS)
    test_set = await lab.test_set(
        [{"input": "Weather in Paris?", "tool_responses": MOCKS, "expected_tool_calls": EXPECTED}]
    )
    run = await lab.run(test_set, target, metric_ids=await _metrics(lab))
    done = await lab.wait(run["id"])
    assert done["counts"]["passed"] == 1, await lab.results(run["id"])

    (result,) = await lab.results(run["id"])
    steps = result["trajectory"]
    assert [step["step"] for step in steps] == [1, 2]
    assert [call["name"] for call in steps[0]["tool_calls"]] == ["get_weather", "lookup"]
    assert steps[0]["tool_calls"][0]["arguments"] == {"city": "Paris"}
    assert [r["content"] for r in steps[0]["tool_results"]] == [{"temp_c": 18}, "umbrella: yes"]
    assert steps[1]["tool_calls"] == [] and "tool_results" not in steps[1]
    assert result["output"] == steps[1]["text"] == 'It is {"temp_c": 18} and umbrella: yes'
    assert all(e["passed"] for e in result["evaluations"]), result["evaluations"]

    # The second call carried the history: the assistant's calls, then each tool's answer.
    sent = fake.requests[1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    call_ids = [call["id"] for call in sent[1]["tool_calls"]]
    assert [m["tool_call_id"] for m in sent[2:]] == call_ids
    assert json.loads(sent[2]["content"]) == {"temp_c": 18}
    assert fake.requests[0].json["tools"] == TOOLS

    events = await _events(owner_engine, run["id"])
    kinds = [kind for kind, _ in events]
    assert kinds.count("step.completed") == 2
    assert kinds.index("step.completed") < kinds.index("result.recorded")
    first, second = (data for kind, data in events if kind == "step.completed")
    assert (first["step"], second["step"]) == (1, 2)
    assert first["tool_results"][0] == {
        "id": call_ids[0],
        "name": "get_weather",
        "content": '{"temp_c": 18}',
    }


async def test_the_loop_speaks_anthropic_through_pydantic_ai(lab, anthropic):
    anthropic.reply = _agent_anthropic
    target = await lab.model(
        provider="anthropic",
        model="claude-haiku-4-5",
        base_url=anthropic.url,
        api_key="sk-ant-test",
        tools=TOOLS,
    )
    test_set = await lab.test_set(
        [{"input": "Weather in Paris?", "tool_responses": MOCKS, "expected_tool_calls": EXPECTED}]
    )
    run = await lab.run(test_set, target, metric_ids=await _metrics(lab))
    done = await lab.wait(run["id"])
    (result,) = await lab.results(run["id"])
    assert done["counts"]["passed"] == 1, result
    assert [len(step["tool_calls"]) for step in result["trajectory"]] == [2, 0]
    first, second = (request.json for request in anthropic.requests)
    assert [tool["name"] for tool in first["tools"]] == ["get_weather", "lookup"]
    assert first["tools"][0]["input_schema"]["required"] == ["city"]
    blocks = second["messages"][-1]["content"]
    assert [block["type"] for block in blocks] == ["tool_result", "tool_result"]


def _agent_anthropic(request: dict[str, Any]) -> str | FakeToolCalls:
    answered = [
        block
        for message in request["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    if not answered:
        return FakeToolCalls(
            [
                FakeToolCall("get_weather", {"city": "Paris"}),
                FakeToolCall("lookup", {"query": "umbrella"}),
            ]
        )
    return "It is " + " and ".join(str(block["content"]) for block in answered) + " temp_c"


async def test_an_unknown_tool_is_a_failed_step_and_the_loop_stops_at_max_steps(lab, fake):
    fake.reply = lambda request: FakeToolCalls([FakeToolCall("teleport", {"to": "Mars"})])
    target = await lab.openai_model(fake, tools=TOOLS)
    test_set = await lab.test_set([{"input": "Go", "tool_responses": MOCKS, "max_steps": 3}])
    steps_metric = await lab.metric("step-count", parameters={"max": 2})
    run = await lab.run(test_set, target, metric_ids=[steps_metric])
    await lab.wait(run["id"])
    (result,) = await lab.results(run["id"])
    steps = result["trajectory"]
    assert len(steps) == 3 and len(fake.requests) == 3
    assert all("a tool it was not given" in step["error"] for step in steps)
    assert steps[-1]["stopped"] == "max_steps"
    assert result["status"] == "failed"  # scored, not crashed: 3 steps > 2


async def test_without_mocks_the_first_replys_calls_are_scored_as_they_are(lab, fake):
    fake.reply = _agent
    target = await lab.openai_model(fake, tools=TOOLS)
    test_set = await lab.test_set([{"input": "Weather?", "expected_tool_calls": EXPECTED}])
    run = await lab.run(test_set, target, metric_ids=[await lab.metric("tool-call")])
    await lab.wait(run["id"])
    (result,) = await lab.results(run["id"])
    assert len(fake.requests) == 1
    assert [len(step["tool_calls"]) for step in result["trajectory"]] == [2]
    assert result["status"] == "passed" and result["output"] == ""


async def test_a_cached_loop_replays_its_calls_and_a_rescore_calls_nothing(lab, fake):
    fake.reply = _agent
    target = await lab.openai_model(fake, tools=TOOLS)
    test_set = await lab.test_set([{"input": "Weather?", "tool_responses": MOCKS}])
    metric = await lab.metric("tool-args-schema")
    first = await lab.run(test_set, target, metric_ids=[metric], use_cache=True)
    await lab.wait(first["id"])
    again = await lab.run(test_set, target, metric_ids=[metric], use_cache=True)
    await lab.wait(again["id"])
    assert len(fake.requests) == 2  # the second run's two steps came from the cache
    (cached,) = await lab.results(again["id"])
    (original,) = await lab.results(first["id"])
    assert (
        cached["cached"]
        and cached["trajectory"][0]["tool_calls"] == original["trajectory"][0]["tool_calls"]
    )

    trajectory = await lab.metric("trajectory", parameters={"mode": "superset"})
    rescored = await lab.post(
        f"/runs/{first['id']}/rescore", {"metric_ids": [trajectory, metric]}, expect=202
    )
    await lab.wait(rescored.json()["id"])
    assert len(fake.requests) == 2
    (result,) = await lab.results(rescored.json()["id"])
    assert result["trajectory"] == original["trajectory"]
    verdicts = {e["metric_type"]: e for e in result["evaluations"]}
    assert verdicts["tool-args-schema"]["passed"]
    assert verdicts["trajectory"]["error"]  # this test expects no calls: nothing to compare


async def test_bad_agent_input_is_refused_naming_the_field(lab, fake):
    bad_schema = [{"type": "function", "function": {"name": "x", "parameters": {"type": 5}}}]
    response = await lab.post(
        "/models",
        {
            "name": "bad",
            "provider": "openai-compatible",
            "model": "m",
            "base_url": fake.base_url,
            "api_key": "k",
            "tools": bad_schema,
        },
    )
    problem = assert_problem(response, 422, field="tools.0.function.parameters")
    assert "not a valid JSON schema at type" in problem["errors"][0]["message"]

    target = await lab.openai_model(fake, tools=TOOLS)
    test_set = await lab.test_set([{"input": "x", "expected_tool_calls": [{"name": "fly"}]}])
    refused = await lab.post(
        "/runs",
        {
            "test_set_id": test_set,
            "target_model_id": target,
            "metric_ids": [await lab.metric("tool-call")],
        },
    )
    assert "does not have: fly" in assert_problem(refused, 422, field="test_set_id")["detail"]

    huge = [{"name": "lookup", "response": "x" * 300_000}]
    response = await lab.post(
        "/tests", {"project_id": lab.project_id, "input": "x", "tool_responses": huge}
    )
    assert_problem(response, 422, field="tool_responses")


async def test_exports_carry_the_trajectory_whole_in_json_and_summed_up_in_csv_and_junit(lab, fake):
    fake.reply = _agent
    target = await lab.openai_model(fake, tools=TOOLS)
    test_set = await lab.test_set([{"input": "Weather?", "tool_responses": MOCKS}])
    run = await lab.run(test_set, target, metric_ids=[await lab.metric("tool-args-schema")])
    await lab.wait(run["id"])

    async def export(fmt: str) -> str:
        response = await lab.client.get(
            f"/api/v1/runs/{run['id']}/export",
            params={"format": fmt},
            headers=lab.account.headers,
        )
        assert response.status_code == 200, response.text
        return response.text

    (exported,) = json.loads(await export("json"))
    assert [len(step["tool_calls"]) for step in exported["trajectory"]] == [2, 0]
    assert "2 steps; tools: get_weather, lookup" in await export("csv")
    assert "[2 steps; tools: get_weather, lookup]" in await export("junit")


async def test_a_regression_in_trajectory_fails_the_gate_like_any_other(lab, fake):
    fake.reply = _agent
    target = await lab.openai_model(fake, tools=TOOLS)
    cases = [
        {"input": f"Weather {i}?", "tool_responses": MOCKS, "expected_tool_calls": EXPECTED}
        for i in range(12)
    ]
    test_set = await lab.test_set(cases)
    metric = await lab.metric("trajectory", parameters={"mode": "exact"})
    baseline = await lab.run(test_set, target, metric_ids=[metric])
    assert (await lab.wait(baseline["id"]))["counts"]["passed"] == 12

    def skips_the_weather(request: dict[str, Any]) -> str | FakeToolCalls:
        if any(m["role"] == "tool" for m in request["messages"]):
            return "done"
        return FakeToolCalls([FakeToolCall("lookup", {"query": "umbrella"})])

    fake.reply = skips_the_weather
    gated = await lab.run(test_set, target, metric_ids=[metric], gate={"baseline": baseline["id"]})
    done = await lab.wait(gated["id"])
    gate = done["gate_result"]
    assert gate["status"] == "failed", gate
    assert gate["comparison"]["metrics"][metric_name(done)]["verdict"] == "regressed"


def metric_name(run: dict[str, Any]) -> str:
    (metric,) = run["metrics"]
    return str(metric["name"])


async def test_a_nul_in_a_tool_call_is_stored_not_fatal(lab, fake):
    """PostgreSQL holds no NUL in JSONB: a model writing one must not sink its batch."""
    calls = FakeToolCalls([FakeToolCall("lookup", {"query": "a\u0000b"}, id="call\u0000x")])
    fake.reply = lambda request: "done" if len(request["messages"]) > 1 else calls
    target = await lab.openai_model(fake, tools=TOOLS)
    test_set = await lab.test_set([{"input": "Go", "tool_responses": MOCKS}])
    run = await lab.run(
        test_set, target, metric_ids=[await lab.metric("tool-args-schema")], use_cache=True
    )
    done = await lab.wait(run["id"])
    assert done["status"] == "completed", done
    (result,) = await lab.results(run["id"])
    call = result["trajectory"][0]["tool_calls"][0]
    assert call["arguments"] == {"query": "a\ufffdb"} and call["id"] == "call\ufffdx"
    # The model was answered under the id it gave, not the stored one.
    assert fake.requests[1].json["messages"][-1]["tool_call_id"] == "call\u0000x"


async def test_a_loop_that_fails_midway_still_counts_what_it_spent(lab, fake):
    fake.reply = _agent
    fake.enqueue(None, Fault.http(400))  # the first step answers; the second is refused
    target = await lab.openai_model(
        fake, tools=TOOLS, input_price_per_mtok=1000, output_price_per_mtok=1000
    )
    test_set = await lab.test_set([{"input": "Weather?", "tool_responses": MOCKS}])
    run = await lab.run(test_set, target, metric_ids=[await lab.metric("tool-args-schema")])
    done = await lab.wait(run["id"])
    (result,) = await lab.results(run["id"])
    assert result["status"] == "errored" and result["error_type"] == "client_error"
    assert result["cost"] and result["cost"] > 0  # the first step's call was paid for
    assert done["spent"] == pytest.approx(result["cost"])


async def test_a_partly_cached_loop_spends_only_what_its_new_calls_cost(lab, fake):
    """The first step comes from the cache (the same question), the second does not (the tools
    answered otherwise): the run's budget is charged the second step alone, at the provider's
    bill, while the result's cost is the whole answer's."""
    fake.reply = _agent
    target = await lab.openai_model(
        fake, tools=TOOLS, input_price_per_mtok=1000, output_price_per_mtok=1000
    )
    first = await lab.run(
        await lab.test_set([{"input": "Weather?", "tool_responses": MOCKS}]),
        target,
        metric_ids=[await lab.metric("tool-args-schema")],
        use_cache=True,
    )
    first_done = await lab.wait(first["id"])
    assert len(fake.billed) == 2
    fake.reset()
    other_answers = [{"name": name, "response": "hail"} for name in ("get_weather", "lookup")]
    second = await lab.run(
        await lab.test_set([{"input": "Weather?", "tool_responses": other_answers}]),
        target,
        metric_ids=[await lab.metric("tool-args-schema")],
        use_cache=True,
    )
    done = await lab.wait(second["id"])
    (result,) = await lab.results(second["id"])
    ((input_tokens, output_tokens),) = fake.billed  # only the second step reached the model
    assert result["output"] == "It is hail and hail" and not result["cached"]
    assert done["spent"] == pytest.approx((input_tokens + output_tokens) * 1000 / 1e6)
    assert result["cost"] > done["spent"] > 0
    assert first_done["spent"] == pytest.approx((await lab.results(first["id"]))[0]["cost"])


async def test_a_loop_whose_steps_outgrow_the_bound_stops_there(lab, fake, monkeypatch):
    """Each call gets its mock's whole answer: 128 calls a step of a 250 KB answer, for ten
    steps, made a 128 MB trajectory (at 50, past what PostgreSQL stores: the chunk failed
    again and again), and each request as large. The loop stops where its steps would hold
    more than the bound, as at its step bound, and the case is scored."""
    monkeypatch.setattr(agent, "MAX_TRAJECTORY_BYTES", 2 * 1024 * 1024)
    big = {"name": "lookup", "response": "x" * 40_000}
    calls = [FakeToolCall("lookup", {"query": str(i)}, id=f"c{i}") for i in range(16)]
    fake.reply = lambda request: FakeToolCalls(calls)
    target = await lab.openai_model(fake, tools=TOOLS)
    test_set = await lab.test_set([{"input": "Go", "tool_responses": [big], "max_steps": 10}])
    step_count = await lab.metric("step-count", parameters={"max": 10})
    run = await lab.run(test_set, target, metric_ids=[step_count])
    await lab.wait(run["id"])
    (result,) = await lab.results(run["id"])
    steps = result["trajectory"]
    # 16 x 40 KB = 640 KB a step: the fourth would pass 2 MB, and keeps no answer.
    assert len(steps) == 4 and len(fake.requests) == 4
    assert steps[-1]["stopped"] == "size"
    assert all("not kept" in answer["error"] for answer in steps[-1]["tool_results"])
    assert all("content" in answer for step in steps[:3] for answer in step["tool_results"])
    assert result["status"] in ("passed", "failed")  # scored


async def test_an_agent_that_fails_midway_keeps_the_steps_before(lab, fake):
    """Its steps were streamed live, but the stored result had none: what happened before
    the failure is kept with the error."""
    fake.reply = _agent
    fake.enqueue(None, Fault.http(400))  # the first step answers; the second is refused
    target = await lab.openai_model(fake, tools=TOOLS)
    test_set = await lab.test_set([{"input": "Weather in Paris?", "tool_responses": MOCKS}])
    run = await lab.run(test_set, target, metric_ids=[await lab.any_answer()])
    await lab.wait(run["id"])
    (result,) = await lab.results(run["id"])
    assert result["status"] == "errored", result
    [step] = result["trajectory"]
    assert [call["name"] for call in step["tool_calls"]] == ["get_weather", "lookup"]
    assert [r["content"] for r in step["tool_results"]] == [{"temp_c": 18}, "umbrella: yes"]
