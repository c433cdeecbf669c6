"""Reading tool calls, apart from any server: what compatible servers send that OpenAI does not."""

from __future__ import annotations

from typing import Any

import pytest

from providers.config import ToolCall
from providers.errors import TargetError
from providers.tool_calls import StreamedCalls, decode_arguments, function_tools


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
