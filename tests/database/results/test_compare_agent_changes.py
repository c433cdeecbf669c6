"""A comparison counts an agent test as changed when what it expects of the agent, or what
the agent's tools answer it, changed: else a loosened expectation reads as the agent's
improvement, and a gate passes a change that improved nothing."""

from __future__ import annotations

import pytest

from tests.fakes.openai_server import FakeToolCall, FakeToolCalls

pytestmark = pytest.mark.slow

TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("get_weather", "lookup")
]
ANSWERS = [{"name": "lookup", "response": "ok"}, {"name": "get_weather", "response": "ok"}]
AGENT_TEST = {"expected_tool_calls": [{"name": "get_weather"}], "tool_responses": ANSWERS}


def _agent(request: dict) -> FakeToolCalls | str:
    """Calls `lookup` first, whatever it is asked; then answers."""
    if any(message["role"] == "tool" for message in request["messages"]):
        return "done"
    return FakeToolCalls([FakeToolCall("lookup", {})])


async def test_an_agent_tests_changed_expectations_or_tools_make_it_changed(lab, fake):
    fake.reply = _agent
    target = await lab.openai_model(fake, tools=TOOLS)
    cases = [{"input": f"q{i}", **AGENT_TEST} for i in range(4)]
    created = await lab.post("/tests/bulk", {"project_id": lab.project_id, "tests": cases})
    ids = created.json()["ids"]
    body = {"project_id": lab.project_id, "name": "agents", "test_ids": ids}
    test_set = (await lab.post("/test-sets", body, expect=201)).json()["id"]
    metric = await lab.metric("tool-call")
    first = await lab.run(test_set, target, metric_ids=[metric])
    assert (await lab.wait(first["id"]))["status"] == "completed"
    edits = (
        {"expected_tool_calls": [{"name": "lookup"}]},  # loosened: the agent now passes
        {"tool_responses": [{"name": "lookup", "response": "changed"}, ANSWERS[1]]},
        {"max_steps": 3},
    )
    for test_id, edit in zip(ids, edits, strict=False):
        response = await lab.client.patch(
            f"/api/v1/tests/{test_id}", json=edit, headers=lab.account.headers
        )
        assert response.status_code == 200, response.text
    second = await lab.run(test_set, target, metric_ids=[metric])
    assert (await lab.wait(second["id"]))["status"] == "completed"

    compared = await lab.client.get(
        f"/api/v1/runs/{second['id']}/compare",
        params={"baseline": first["id"]},
        headers=lab.account.headers,
    )
    assert compared.status_code == 200, compared.text
    counted = compared.json()["cases"]
    assert sorted(counted["changed_test_ids"]) == sorted(ids[:3])
    assert counted["changed"] == 3 and counted["paired"] == 1
