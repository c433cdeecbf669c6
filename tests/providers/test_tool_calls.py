"""Reading tool calls, apart from any server: what compatible servers send that OpenAI does not."""

from __future__ import annotations

from typing import Any

import pytest

from providers.config import ToolCall
from providers.errors import TargetError
from providers.tool_calls import (
    MAX_TOOL_CALLS,
    StreamedCalls,
    decode_arguments,
    function_tools,
    read_calls,
)


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ('{"a": 1}', {"a": 1}),
        ({"a": 1}, {"a": 1}),
        (None, {}),
        ("", {}),
        ('{"a": ', '{"a": '),
        ("[1, 2]", "[1, 2]"),
        ([1, 2], "[1, 2]"),
        ("[" * 5000, "[" * 5000),  # nested past the decoder's depth: text, as broken JSON is
        # nested past what is stored (a RecursionError writing it failed the chunk): text too
        ('{"a":' * 600 + "1" + "}" * 600, '{"a":' * 600 + "1" + "}" * 600),
    ],
)
def test_arguments_are_an_object_or_the_text_sent(raw: Any, decoded: Any) -> None:
    assert decode_arguments(raw) == decoded


def test_streamed_pieces_without_an_index_follow_their_id() -> None:
    calls = StreamedCalls()
    calls.add([{"id": "a", "function": {"name": "f", "arguments": '{"x"'}}])
    calls.add([{"function": {"arguments": ": 1}"}}])
    calls.add([{"id": "b", "function": {"name": "g", "arguments": "{}"}}])

    assert calls.result() == (ToolCall("a", "f", {"x": 1}), ToolCall("b", "g", {}))


def test_a_name_and_id_repeated_in_every_piece_are_not_doubled() -> None:
    calls = StreamedCalls()
    for piece in ('{"x"', ": 2}"):
        calls.add([{"index": 0, "id": "a", "function": {"name": "f", "arguments": piece}}])

    assert calls.result() == (ToolCall("a", "f", {"x": 2}),)


def test_a_tool_without_a_function_name_is_a_configuration_error() -> None:
    with pytest.raises(TargetError) as refused:
        function_tools([{"type": "function", "function": {"parameters": {}}}])

    assert refused.value.kind == "configuration_error"


def test_an_answer_asks_for_at_most_128_calls() -> None:
    """Each call is work (an agent's step, a trajectory's row): an answer of thousands of
    pieces, each a new id, ends at the 129th rather than scanning them all for every piece."""
    calls = StreamedCalls()
    calls.add([{"id": f"call {i}", "function": {"name": "f"}} for i in range(MAX_TOOL_CALLS)])
    assert len(calls.result()) == MAX_TOOL_CALLS
    with pytest.raises(TargetError) as refused:
        calls.add([{"id": f"more {i}", "function": {"name": "f"}} for i in range(20_000)])
    assert refused.value.kind == "invalid_response"
    assert "more than 128 tool calls" in str(refused.value)

    whole = [{"id": f"c{i}", "function": {"name": "f", "arguments": "{}"}} for i in range(129)]
    with pytest.raises(TargetError, match="more than 128 tool calls"):
        read_calls(whole, "the answer")
    assert len(read_calls(whole[:128], "the answer")) == 128


def test_arguments_in_many_small_pieces_are_joined_whole() -> None:
    calls = StreamedCalls()
    calls.add([{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x": "'}}])
    for _ in range(50_000):
        calls.add([{"index": 0, "function": {"arguments": "y"}}])
    calls.add([{"index": 0, "function": {"arguments": '"}'}}])
    assert calls.result() == (ToolCall("a", "f", {"x": "y" * 50_000}),)
