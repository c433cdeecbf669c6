"""Tool calling through pydantic-ai, against the fake Anthropic Messages API over real HTTP:
the tools sent as Anthropic's (`input_schema`), `tool_use` blocks read as calls, and the tools'
answers sent back as `tool_result` blocks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from providers.config import TargetReply, TargetRequest, ToolCall
from providers.errors import TargetError
from providers.targets import call_target
from tests.fakes.anthropic_server import FakeAnthropic, FakeToolCall, FakeToolCalls, Fault
from tests.providers.support import CLOCK, WEATHER, WEATHER_SCHEMA, target_config

API_KEY = "sk-ant-provider-test"


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(require_api_key=API_KEY) as server:
        yield server


async def ask(fake: FakeAnthropic, request: TargetRequest, **fields: Any) -> TargetReply:
    fields.setdefault("tools", [WEATHER, CLOCK])
    # A model without a large default output: pydantic-ai asks for a whole answer.
    config = target_config("anthropic", fake.url, model="claude-fake-1", api_key=API_KEY, **fields)
    return await call_target(config, request, allow_private_networks=True)


async def test_tools_are_sent_with_their_input_schema(fake: FakeAnthropic) -> None:
    await ask(fake, TargetRequest(input="Weather in Oslo?", system_prompt="Be brief."))

    sent = fake.requests[0].json
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city now.",
            "input_schema": WEATHER_SCHEMA,
        },
        {"name": "get_time", "description": "", "input_schema": {"type": "object"}},
    ]
    assert sent["system"] == "Be brief."
    assert sent["model"] == "claude-fake-1"


async def test_tool_use_blocks_are_read_as_calls(fake: FakeAnthropic) -> None:
    fake.reply = lambda request: FakeToolCalls(
        [
            FakeToolCall("get_weather", {"city": "Oslo", "unit": "C"}, id="toolu_01"),
            FakeToolCall("get_time", id="toolu_02"),
        ],
        content="Let me look.",
    )

    reply = await ask(fake, TargetRequest(input="Weather and time in Oslo?"))

    assert reply.output == "Let me look."
    assert reply.tool_calls == (
        ToolCall("toolu_01", "get_weather", {"city": "Oslo", "unit": "C"}),
        ToolCall("toolu_02", "get_time", {}),
    )
    assert (reply.input_tokens, reply.output_tokens) == (5, 8)


async def test_only_tool_calls_give_empty_output(fake: FakeAnthropic) -> None:
    fake.reply = lambda request: FakeToolCalls([FakeToolCall("get_time", id="toolu_9")])

    reply = await ask(fake, TargetRequest(input="What time is it?"))

    assert (reply.output, reply.tool_calls) == ("", (ToolCall("toolu_9", "get_time", {}),))


async def test_tool_results_go_back_as_tool_result_blocks(fake: FakeAnthropic) -> None:
    fake.reply = lambda request: "Sunny, 21 C."
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_01",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01", "content": "sunny, 21 C"},
    ]

    reply = await ask(fake, TargetRequest(messages=history))

    assert (reply.output, reply.tool_calls) == ("Sunny, 21 C.", ())
    user, assistant, results = fake.requests[0].json["messages"]
    assert user == {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]}
    assert assistant["role"] == "assistant"
    assert assistant["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Oslo"}},
    ]
    assert results["role"] == "user"
    [block] = results["content"]
    assert block["type"] == "tool_result"
    assert block["tool_use_id"] == "toolu_01"
    assert block["content"] in ("sunny, 21 C", [{"type": "text", "text": "sunny, 21 C"}])


async def test_without_tools_no_tools_are_sent(fake: FakeAnthropic) -> None:
    reply = await ask(fake, TargetRequest(input="hello there"), tools=[])

    assert (reply.output, reply.tool_calls) == ("echo: hello there", ())
    assert "tools" not in fake.requests[0].json
    assert "tool_choice" not in fake.requests[0].json


async def test_an_answer_asking_for_more_than_128_calls_is_invalid(fake: FakeAnthropic) -> None:
    """As every provider's: each call is an agent's step and a trajectory's row."""
    fake.reply = lambda request: FakeToolCalls(
        [FakeToolCall("get_time", id=f"toolu_{i}") for i in range(129)]
    )
    with pytest.raises(TargetError) as failed:
        await ask(fake, TargetRequest(input="What time is it, 129 times?"))
    assert failed.value.kind == "invalid_response"
    assert "more than 128 tool calls" in failed.value.message
    fake.reply = lambda request: FakeToolCalls(
        [FakeToolCall("get_time", id=f"toolu_{i}") for i in range(128)]
    )
    assert len((await ask(fake, TargetRequest(input="And 128?"))).tool_calls) == 128


def _message(**fields: Any) -> dict[str, Any]:
    usage = {"input_tokens": 1, "output_tokens": 1}
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-fake-1",
            "stop_reason": "end_turn", "content": [{"type": "text", "text": "hi"}],
            "usage": usage, **fields}  # fmt: skip


UNFORESEEN = {
    "the content is null": _message(content=None),
    "the usage is null": _message(usage=None),
    "a text block has no text": _message(content=[{"type": "text"}]),
}


@pytest.mark.parametrize("body", UNFORESEEN.values(), ids=UNFORESEEN.keys())
async def test_an_answer_the_sdk_cannot_read_is_an_invalid_response(
    fake: FakeAnthropic, body: dict[str, Any]
) -> None:
    """The SDK's own reading raised TypeError or AttributeError, which escaped the call and
    failed the case's whole chunk: it is this case's invalid response."""
    fake.enqueue(Fault.http(200, body))
    with pytest.raises(TargetError) as failed:
        await ask(fake, TargetRequest(input="Hi"))
    assert failed.value.kind == "invalid_response"
    assert "not usable" in failed.value.message and API_KEY not in failed.value.message


async def test_a_tool_input_nested_past_what_is_stored_is_an_invalid_response(
    fake: FakeAnthropic,
) -> None:
    """The SDK reads a tool's input 900 deep; stored, it failed the case's whole chunk."""
    deep = "[" * 900 + "]" * 900
    body = _message(
        stop_reason="tool_use",
        content=[{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": "DEEP"}}],
    )
    fake.enqueue(Fault.http(200, json.dumps(body).replace('"DEEP"', deep)))
    with pytest.raises(TargetError) as failed:
        await ask(fake, TargetRequest(input="Hi"))
    assert failed.value.kind == "invalid_response"
