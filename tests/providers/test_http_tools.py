"""Tool calls of a team's own HTTP endpoint (found at `tool_calls_path`), through real HTTP
against the fake team app; and the demo provider, which never calls tools."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from providers.config import TargetReply, TargetRequest, ToolCall
from providers.errors import TargetError
from providers.targets import call_target
from tests.fakes.http_app import FakeHttpApp
from tests.providers.support import WEATHER, target_config

BODY = '{"question": {{ input | tojson }}, "tools": {{ tools | tojson }}}'


@pytest.fixture
def app() -> Iterator[FakeHttpApp]:
    with FakeHttpApp(paths=["/agent"]) as server:
        yield server


async def ask(app: FakeHttpApp, answer: dict[str, Any], **fields: Any) -> TargetReply:
    app.reply = lambda body: answer
    settings: dict[str, Any] = {
        "http_method": "POST",
        "body_template": BODY,
        "response_path": "$.answer",
        "tool_calls_path": "$.calls",
        "tools": [WEATHER],
    }
    config = target_config("http", f"{app.url}/agent", **{**settings, **fields})
    return await call_target(
        config, TargetRequest(input="Weather in Oslo?"), allow_private_networks=True
    )


async def test_plain_calls_and_the_tools_in_the_template(app: FakeHttpApp) -> None:
    answer = {
        "answer": "Looking it up.",
        "calls": [
            {"name": "get_weather", "arguments": {"city": "Oslo"}},
            {"name": "get_weather", "arguments": '{"city": "Bergen"}'},
            {"name": "get_time", "arguments": "not json", "id": "t-9"},
        ],
    }

    reply = await ask(app, answer)

    assert reply.output == "Looking it up."
    assert reply.tool_calls == (
        ToolCall("call_0", "get_weather", {"city": "Oslo"}),
        ToolCall("call_1", "get_weather", {"city": "Bergen"}),
        ToolCall("t-9", "get_time", "not json"),
    )
    assert app.requests[0].json == {"question": "Weather in Oslo?", "tools": [WEATHER]}


async def test_openai_shaped_calls_in_an_answer_without_text(app: FakeHttpApp) -> None:
    message = {
        "content": None,
        "tool_calls": [
            {
                "id": "call_x",
                "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": "Oslo"})},
            }
        ],
    }

    reply = await ask(
        app,
        {"choices": [{"message": message}]},
        response_path="$.choices[0].message.content",
        tool_calls_path="$.choices[0].message.tool_calls",
    )

    assert reply.output == ""
    assert reply.tool_calls == (ToolCall("call_x", "get_weather", {"city": "Oslo"}),)


async def test_each_item_a_path_finds_is_a_call(app: FakeHttpApp) -> None:
    answer = {"answer": "", "steps": [{"call": {"name": "a"}}, {"call": {"name": "b"}}]}

    reply = await ask(app, answer, tool_calls_path="$.steps[*].call")

    assert reply.tool_calls == (ToolCall("call_0", "a", {}), ToolCall("call_1", "b", {}))


@pytest.mark.parametrize("answer", [{"answer": "hi"}, {"answer": "hi", "calls": None}])
async def test_nothing_at_the_path_is_no_calls(app: FakeHttpApp, answer: dict[str, Any]) -> None:
    reply = await ask(app, answer)

    assert (reply.output, reply.tool_calls) == ("hi", ())


async def test_without_a_path_calls_are_not_read(app: FakeHttpApp) -> None:
    reply = await ask(app, {"answer": "hi", "calls": [{"name": "x"}]}, tool_calls_path=None)

    assert reply.tool_calls == ()


async def test_a_call_without_a_name_is_an_invalid_answer(app: FakeHttpApp) -> None:
    with pytest.raises(TargetError) as refused:
        await ask(app, {"answer": "hi", "calls": [{"arguments": {}}]})

    assert refused.value.kind == "invalid_response"
    assert "$.calls" in str(refused.value)


async def test_the_demo_provider_never_calls_tools() -> None:
    config = target_config("demo", None, tools=[WEATHER])

    reply = await call_target(config, TargetRequest(input="hi"), allow_private_networks=True)

    assert reply.output.startswith("[demo]") and reply.tool_calls == ()
