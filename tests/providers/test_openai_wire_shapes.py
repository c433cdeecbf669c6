"""An OpenAI-compatible server's answer of the wrong shape is an invalid response (an errored
case, which the engine reports), never an exception of another kind escaping the call (which
would stop the chunk); token counts are whole numbers or unknown, never text (prices are
computed from them)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from app.engine.calls import cost
from providers.config import TargetReply, TargetRequest
from providers.errors import TargetError
from providers.targets import call_target
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.helpers import longest_stall
from tests.providers.support import target_config


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def _completion(message: Any, **extra: Any) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message}], **extra}


def _events(*chunks: Any) -> Fault:
    """A streamed answer of these chunks, then [DONE]."""
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
    return Fault.http(200, body, headers={"content-type": "text/event-stream"})


async def _ask(fake: FakeOpenAI, *, stream: bool = False, **fields: Any) -> TargetReply:
    config = target_config("openai-compatible", fake.base_url, stream=stream, **fields)
    return await call_target(
        config,
        TargetRequest(input="Hi"),
        allow_private_networks=True,
        on_delta=(lambda piece: None) if stream else None,
    )


WHOLE = {
    "a content part's text is null": _completion({"content": [{"type": "text", "text": None}]}),
    "a content part's text is a number": _completion({"content": [{"text": 7}]}),
    "the content is an object": _completion({"content": {"text": "hi"}}),
    "the message is text": _completion("hi"),
    "the tool calls are a number": _completion({"content": None, "tool_calls": 3}),
}


@pytest.mark.parametrize("body", WHOLE.values(), ids=WHOLE.keys())
async def test_a_whole_answer_of_the_wrong_shape_is_an_invalid_response(
    fake: FakeOpenAI, body: dict[str, Any]
) -> None:
    fake.enqueue(Fault.http(200, body))
    with pytest.raises(TargetError) as failed:
        await _ask(fake)
    assert failed.value.kind == "invalid_response"
    assert "not usable" in failed.value.message


async def test_an_answer_nested_past_the_decoders_depth_is_an_invalid_response(
    fake: FakeOpenAI,
) -> None:
    """Never a RecursionError escaping the call (and stopping the chunk, to be run again)."""
    deep = '{"object": "chat.completion", "choices": ' + "[" * 100_000 + "]" * 100_000 + "}"
    fake.enqueue(Fault.http(200, deep, headers={"content-type": "application/json"}))
    with pytest.raises(TargetError) as failed:
        await _ask(fake)
    assert failed.value.kind == "invalid_response"
    assert "not usable" in failed.value.message


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_tool_arguments_nested_past_the_decoders_depth_are_kept_as_text(
    fake: FakeOpenAI, stream: bool
) -> None:
    arguments = "[" * 5000
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    if stream:
        delta = {"tool_calls": [{"index": 0, **call}]}
        fake.enqueue(_events({"choices": [{"index": 0, "delta": delta}]}))
    else:
        fake.enqueue(Fault.http(200, _completion({"content": None, "tool_calls": [call]})))
    reply = await _ask(fake, stream=stream)
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("f", arguments)]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_tool_arguments_nested_past_what_is_stored_are_an_invalid_response(
    fake: FakeOpenAI, stream: bool
) -> None:
    """Sent as a list 1,000 deep (not text), they were written back as text: a RecursionError
    escaping the call."""
    deep = "[" * 1000 + "]" * 1000  # (too deep for json.dumps to write: placed as text)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "DEEP"}}
    if stream:
        delta = {"tool_calls": [{"index": 0, **call}]}
        body = json.dumps({"choices": [{"index": 0, "delta": delta}]})
        text = "data: " + body.replace('"DEEP"', deep) + "\n\ndata: [DONE]\n\n"
        fake.enqueue(Fault.http(200, text, headers={"content-type": "text/event-stream"}))
    else:
        completion = json.dumps(_completion({"content": None, "tool_calls": [call]}))
        fake.enqueue(Fault.http(200, completion.replace('"DEEP"', deep)))
    with pytest.raises(TargetError) as failed:
        await _ask(fake, stream=stream)
    assert failed.value.kind == "invalid_response"


STREAMED = {
    "the choices are an object": {"choices": {"0": {"delta": {"content": "hi"}}}},
    "a choice is text": {"choices": ["hi"]},
    "a delta is text": {"choices": [{"index": 0, "delta": "hi"}]},
    "a delta's content part has null text": {
        "choices": [{"index": 0, "delta": {"content": [{"text": None}]}}]
    },
}


@pytest.mark.parametrize("chunk", STREAMED.values(), ids=STREAMED.keys())
async def test_a_streamed_chunk_of_the_wrong_shape_is_an_invalid_response(
    fake: FakeOpenAI, chunk: dict[str, Any]
) -> None:
    fake.enqueue(_events({"choices": [{"index": 0, "delta": {"content": "Hel"}}]}, chunk))
    with pytest.raises(TargetError) as failed:
        await _ask(fake, stream=True)
    assert failed.value.kind == "invalid_response"
    assert "not usable" in failed.value.message


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_token_counts_sent_as_text_are_numbers_and_priced(
    fake: FakeOpenAI, stream: bool
) -> None:
    usage = {"prompt_tokens": "12", "completion_tokens": "5"}
    if stream:
        fake.enqueue(
            _events({"choices": [{"index": 0, "delta": {"content": "hi"}}]}, {"usage": usage})
        )
    else:
        fake.enqueue(Fault.http(200, _completion({"content": "hi"}, usage=usage)))
    prices = {"input_price_per_mtok": Decimal(1), "output_price_per_mtok": Decimal(2)}
    reply = await _ask(fake, stream=stream, **prices)
    assert (reply.output, reply.input_tokens, reply.output_tokens) == ("hi", 12, 5)
    config = target_config("openai-compatible", fake.base_url, **prices)
    assert cost(config, reply) == pytest.approx(22 / 1_000_000)


@pytest.mark.parametrize(
    "count", ["many", -3, 2.5, True, {"n": 1}, None, "\N{SUPERSCRIPT TWO}", 2**31, 10**30]
)
async def test_a_count_that_is_no_whole_number_is_unknown(fake: FakeOpenAI, count: Any) -> None:
    usage = {"prompt_tokens": count, "completion_tokens": 4}
    fake.enqueue(Fault.http(200, _completion({"content": "hi"}, usage=usage)))
    reply = await _ask(fake)
    assert (reply.output, reply.input_tokens, reply.output_tokens) == ("hi", None, 4)


async def test_content_parts_without_text_add_nothing(fake: FakeOpenAI) -> None:
    parts = [
        {"type": "text", "text": "Hello, "},
        {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}},
        {"type": "text", "text": "world"},
    ]
    fake.enqueue(Fault.http(200, _completion({"content": parts})))
    assert (await _ask(fake)).output == "Hello, world"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_usage_of_the_wrong_shape_leaves_the_counts_unknown_and_the_answer(
    fake: FakeOpenAI, stream: bool
) -> None:
    if stream:
        fake.enqueue(
            _events({"choices": [{"index": 0, "delta": {"content": "hi"}}]}, {"usage": [1, 2]})
        )
    else:
        fake.enqueue(Fault.http(200, _completion({"content": "hi"}, usage=[1, 2])))
    reply = await _ask(fake, stream=stream)
    assert (reply.output, reply.input_tokens, reply.output_tokens) == ("hi", None, None)


async def test_a_streamed_tool_calls_id_of_another_type_is_read_as_text(fake: FakeOpenAI) -> None:
    """Without an index, a call is found by its id: a list there was an unhashable key, whose
    TypeError escaped the call and failed the case's whole chunk."""
    call = {"id": [1], "function": {"name": "lookup", "arguments": "{}"}}
    fake.enqueue(_events({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}))
    reply = await _ask(fake, stream=True)
    assert [(c.id, c.name) for c in reply.tool_calls] == [("[1]", "lookup")]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"message": "the model crashed", "type": "server_error"}, "server_error"),
        ({"message": "context too long", "code": 400}, "client_error"),
        ({"message": "context too long", "code": "context_length_exceeded"}, "client_error"),
        ({"message": "slow down", "type": "rate_limit_error"}, "rate_limited"),
    ],
)
async def test_an_error_chunk_mid_stream_is_the_answer(
    fake: FakeOpenAI, error: dict[str, Any], kind: str
) -> None:
    """vLLM and others report a failure mid-stream as a chunk of its own, then [DONE]: the text
    before it (or none) was the answer, scored as if the model had finished."""
    fake.enqueue(
        _events(
            {"choices": [{"index": 0, "delta": {"content": "The answer is"}}]}, {"error": error}
        )
    )
    with pytest.raises(TargetError) as failed:
        await _ask(fake, stream=True)
    assert failed.value.kind == kind
    assert f"the stream reported an error: {error['message']}" in failed.value.message


def _flood(events: int) -> Fault:
    """One-character deltas, as many as fit in an answer's ten megabytes (some 169,000)."""
    chunk = json.dumps({"choices": [{"index": 0, "delta": {"content": "a"}}]})
    return Fault.http(
        200,
        f"data: {chunk}\n\n" * events + "data: [DONE]\n\n",
        headers={"content-type": "text/event-stream"},
    )


async def test_a_flood_of_small_events_lets_the_event_loop_run(fake: FakeOpenAI) -> None:
    """Every event is parsed and published on the loop: read from one chunk, 160,000 of them
    held it for seconds, every tenant's requests and streams waiting."""
    fake.enqueue(_flood(160_000))
    reply, stall = await longest_stall(_ask(fake, stream=True, timeout_seconds=60))
    assert reply.output == "a" * 160_000
    assert stall < 0.5, stall


async def test_a_flood_of_small_events_ends_at_the_calls_deadline(fake: FakeOpenAI) -> None:
    """The client's own timer could not end the call while its chunk was read on the loop:
    here each delta takes its publisher some 60 microseconds, ten seconds in all."""
    fake.enqueue(_flood(160_000))
    config = target_config("openai-compatible", fake.base_url, stream=True, timeout_seconds=1)
    started = time.monotonic()
    with pytest.raises(TargetError) as failed:
        await call_target(
            config,
            TargetRequest(input="Hi"),
            allow_private_networks=True,
            on_delta=lambda piece: time.sleep(0.00005),
        )
    assert failed.value.kind == "timeout" and failed.value.message == "no answer within 1 s"
    assert time.monotonic() - started < 3
