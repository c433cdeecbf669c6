"""The fakes' tool calls are the providers' real wire formats: the official SDKs read them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import Message, MessageParam, ToolParam
from openai import AsyncOpenAI

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI, FakeToolCall, FakeToolCalls

ARGUMENTS = {"city": "Rio de Janeiro", "unit": "C"}
CALLS = FakeToolCalls([FakeToolCall("get_weather", ARGUMENTS, id="call_1")], content="Checking.")
TOOL: ToolParam = {"name": "get_weather", "input_schema": {"type": "object"}}


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(reply=lambda request: CALLS) as server:
        yield server


@pytest.fixture
def anthropic_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(reply=lambda request: CALLS, require_api_key="sk-ant-test") as server:
        yield server


async def test_openai_sdk_reads_a_whole_answer_with_calls(openai_fake: FakeOpenAI) -> None:
    async with AsyncOpenAI(base_url=openai_fake.base_url, api_key="k", max_retries=0) as sdk:
        completion = await sdk.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Weather?"}]
        )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    [call] = choice.message.tool_calls or []
    assert call.id == "call_1" and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == ARGUMENTS


async def test_openai_stream_sends_id_and_name_first_then_pieces(openai_fake: FakeOpenAI) -> None:
    async with AsyncOpenAI(base_url=openai_fake.base_url, api_key="k", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Weather?"}], stream=True
        )
        deltas = [chunk.choices[0] async for chunk in stream if chunk.choices]

    pieces = [call for choice in deltas for call in choice.delta.tool_calls or ()]
    first, *rest = pieces
    assert (first.index, first.id, first.function and first.function.name) == (
        0,
        "call_1",
        "get_weather",
    )
    assert len(rest) > 2 and all(piece.id is None and piece.index == 0 for piece in rest)
    arguments = "".join(piece.function.arguments or "" for piece in pieces if piece.function)
    assert json.loads(arguments) == ARGUMENTS
    assert deltas[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_anthropic_sdk_reads_tool_use(anthropic_fake: FakeAnthropic, stream: bool) -> None:
    async with AsyncAnthropic(
        base_url=anthropic_fake.url, api_key="sk-ant-test", max_retries=0
    ) as sdk:
        question: list[MessageParam] = [{"role": "user", "content": "Weather?"}]
        message: Message
        if stream:
            async with sdk.messages.stream(
                model="claude-fake-1", max_tokens=100, messages=question, tools=[TOOL]
            ) as events:
                message = await events.get_final_message()
        else:
            message = await sdk.messages.create(
                model="claude-fake-1", max_tokens=100, messages=question, tools=[TOOL]
            )

    assert message.stop_reason == "tool_use"
    text, tool_use = message.content
    assert text.type == "text" and text.text == "Checking."
    assert tool_use.type == "tool_use"
    assert (tool_use.id, tool_use.name, tool_use.input) == ("call_1", "get_weather", ARGUMENTS)
    assert message.usage.input_tokens == 1


async def test_anthropic_errors_and_required_fields(anthropic_fake: FakeAnthropic) -> None:
    async with httpx.AsyncClient(base_url=anthropic_fake.url) as http:
        denied = await http.post("/v1/messages", json={}, headers={"x-api-key": "wrong"})
        missing = await http.post(
            "/v1/messages", json={"messages": []}, headers={"x-api-key": "sk-ant-test"}
        )

    assert denied.status_code == 401
    assert denied.json()["error"]["type"] == "authentication_error"
    assert missing.status_code == 400
    assert missing.json()["type"] == "error"
