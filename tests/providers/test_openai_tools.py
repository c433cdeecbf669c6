"""Tool calling over the OpenAI wire format, through real HTTP against the fake OpenAI server:
the tools offered, the calls read (whole and streamed in pieces), an agent loop's turns sent
back in OpenAI's shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from providers.config import TargetReply, TargetRequest, ToolCall
from providers.targets import call_target
from tests.fakes.openai_server import FakeOpenAI, FakeToolCall, FakeToolCalls
from tests.providers.support import CLOCK, WEATHER, target_config

OSLO = {"city": "Oslo", "unit": "C"}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(require_api_key="sk-provider-test-key") as server:
        yield server


async def ask(
    fake: FakeOpenAI,
    request: TargetRequest,
    *,
    stream: bool = False,
    deltas: list[str] | None = None,
    **fields: Any,
) -> TargetReply:
    fields.setdefault("tools", [WEATHER])
    config = target_config("openai-compatible", fake.base_url, stream=stream, **fields)
    on_delta = (deltas if deltas is not None else []).append
    return await call_target(config, request, allow_private_networks=True, on_delta=on_delta)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_tools_are_offered_and_a_call_is_read(fake: FakeOpenAI, stream: bool) -> None:
    fake.reply = lambda request: FakeToolCalls([FakeToolCall("get_weather", OSLO, id="call_a")])

    reply = await ask(
        fake,
        TargetRequest(input="Weather in Oslo?"),
        stream=stream,
        parameters={"tool_choice": "required", "temperature": 0},
    )

    assert reply.tool_calls == (ToolCall("call_a", "get_weather", OSLO),)
    assert reply.output == ""
    sent = fake.requests[0].json
    assert sent["tools"] == [WEATHER]
    assert sent["tool_choice"] == "required"
    assert sent.get("stream", False) is stream
    assert (reply.input_tokens, reply.output_tokens) == (3, 4)  # words of the arguments


async def test_streamed_arguments_are_assembled_from_pieces(fake: FakeOpenAI) -> None:
    arguments = {"city": "Rio de Janeiro", "unit": "F"}
    fake.reply = lambda request: FakeToolCalls(
        [FakeToolCall("get_weather", arguments)], content="Checking the weather."
    )
    deltas: list[str] = []

    reply = await ask(fake, TargetRequest(input="Weather in Rio?"), stream=True, deltas=deltas)

    assert len(json.dumps(arguments)) > 3 * 7  # the fake sent the arguments in several pieces
    assert reply.tool_calls == (ToolCall("call_fake_1_0", "get_weather", arguments),)
    assert reply.output == "Checking the weather."
    assert "".join(deltas) == "Checking the weather." and len(deltas) == 3


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_several_calls_in_one_answer(fake: FakeOpenAI, stream: bool) -> None:
    fake.reply = lambda request: FakeToolCalls(
        [
            FakeToolCall("get_weather", {"city": "Oslo"}),
            FakeToolCall("get_weather", {"city": "Lima"}),
            FakeToolCall("get_time"),
        ]
    )

    reply = await ask(
        fake, TargetRequest(input="Weather and time?"), stream=stream, tools=[WEATHER, CLOCK]
    )

    assert reply.tool_calls == (
        ToolCall("call_fake_1_0", "get_weather", {"city": "Oslo"}),
        ToolCall("call_fake_1_1", "get_weather", {"city": "Lima"}),
        ToolCall("call_fake_1_2", "get_time", {}),
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("arguments", ['{"city": "Oslo"', '["Oslo"]', "Oslo"])
async def test_arguments_that_are_not_a_json_object_are_kept_as_text(
    fake: FakeOpenAI, stream: bool, arguments: str
) -> None:
    fake.reply = lambda request: FakeToolCalls([FakeToolCall("get_weather", arguments)])

    reply = await ask(fake, TargetRequest(input="Weather?"), stream=stream)

    assert reply.tool_calls == (ToolCall("call_fake_1_0", "get_weather", arguments),)


async def test_an_agent_loop_is_sent_in_openai_shape(fake: FakeOpenAI) -> None:
    fake.reply = lambda request: "Sunny in Oslo, cloudy in Lima."
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Oslo and Lima?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
                {  # decoded, as a reply's ToolCall holds them: sent as JSON text
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Lima"}},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "cloudy, 17 C"},
    ]

    reply = await ask(fake, TargetRequest(messages=history, system_prompt="Be brief."))

    assert reply.output == "Sunny in Oslo, cloudy in Lima."
    assert reply.tool_calls == ()
    assert fake.requests[0].json["messages"] == [
        {"role": "system", "content": "Be brief."},
        history[0],
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                history[1]["tool_calls"][0],
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Lima"}'},
                },
            ],
        },
        history[2],
        history[3],
    ]


async def test_a_tool_message_without_a_call_id_is_a_user_turn(fake: FakeOpenAI) -> None:
    history = [{"role": "tool", "content": "the lookup said 42"}]

    reply = await ask(fake, TargetRequest(messages=history, input="And so?"), tools=[])

    assert reply.output == "echo: And so?"
    assert fake.requests[0].json["messages"] == [
        {"role": "user", "content": "the lookup said 42"},
        {"role": "user", "content": "And so?"},
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_without_tools_no_tools_are_sent(fake: FakeOpenAI, stream: bool) -> None:
    reply = await ask(
        fake,
        TargetRequest(input="hello there"),
        stream=stream,
        tools=[],
        parameters={"tool_choice": "auto"},
    )

    assert (reply.output, reply.tool_calls) == ("echo: hello there", ())
    sent = fake.requests[0].json
    assert "tools" not in sent and "tool_choice" not in sent
