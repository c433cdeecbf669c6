"""Tool calls across the providers: reading the calls a model asked for (whole, streamed in
pieces, or found in a team's own answer), the tools a configuration offers, and the turns of an
agent loop in the OpenAI shape."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from providers.config import ToolCall
from providers.errors import TargetError
from utils import fastjson

# The calls one answer may ask for: more is no model's answer, and each is work (a step of an
# agent's loop, a row of its trajectory).
MAX_TOOL_CALLS = 128


def decode_arguments(raw: Any) -> dict[str, Any] | str:
    """A call's arguments: the JSON object they hold, else the text as sent (a model's broken
    JSON is scored as such). No arguments at all is an empty object."""
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if not isinstance(raw, str):  # a list or a number from a team's own endpoint
        return json.dumps(raw, ensure_ascii=False)
    try:
        decoded = json.loads(raw)
        fastjson.refuse_deep(decoded, raw)  # nested past what is stored: text as well
    except (ValueError, RecursionError):  # nested past what the decoder walks: text as well
        return raw
    return decoded if isinstance(decoded, dict) else raw


def arguments_text(arguments: Any) -> str:
    """Arguments as the JSON text the OpenAI wire format carries (a history may hold them
    decoded, as a reply's `ToolCall` does)."""
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def read_calls(items: Iterable[Any], where: str) -> tuple[ToolCall, ...]:
    """Calls shaped as OpenAI's (`{"id", "function": {"name", "arguments"}}`) or plainly
    (`{"name", "arguments"}`); a call without an id gets `call_<its position>`."""
    calls: list[ToolCall] = []
    for position, item in enumerate(items):
        if position == MAX_TOOL_CALLS:
            raise _too_many(where)
        function = item.get("function") if isinstance(item, dict) else None
        fields = function if isinstance(function, dict) else item
        name = fields.get("name") if isinstance(fields, dict) else None
        if not isinstance(name, str) or not name:
            raise TargetError(
                "invalid_response", f"the tool call at position {position} of {where} has no name"
            )
        call_id = item.get("id") or item.get("tool_call_id") or f"call_{position}"
        calls.append(ToolCall(str(call_id), name, decode_arguments(fields.get("arguments"))))
    return tuple(calls)


def _too_many(where: str) -> TargetError:
    return TargetError(
        "invalid_response", f"{where} asks for more than {MAX_TOOL_CALLS} tool calls at once"
    )


@dataclass
class _Pieces:
    id: str = ""
    name: str = ""
    # Joined once at the end: `+=` on an attribute copies the whole text for every piece.
    arguments: list[str] = field(default_factory=list)


class StreamedCalls:
    """Calls assembled from streamed `delta.tool_calls`: per `index`, the id and name come
    first and the arguments' JSON text arrives in pieces."""

    def __init__(self) -> None:
        self._calls: dict[Any, _Pieces] = {}
        self._ids: set[str] = set()  # of the calls so far

    def add(self, deltas: Any) -> None:
        if not isinstance(deltas, list):
            return
        for delta in deltas:
            if not isinstance(delta, dict):
                continue
            key = self._key(delta)
            pieces = self._calls.get(key)
            if pieces is None:
                if len(self._calls) == MAX_TOOL_CALLS:
                    raise _too_many("the streamed answer")
                pieces = self._calls[key] = _Pieces()
            function = delta.get("function")
            if not isinstance(function, dict):
                function = {}
            # Servers that repeat the id and name in every piece must not double them.
            pieces.id = pieces.id or str(delta.get("id") or "")
            self._ids.add(pieces.id)
            pieces.name = pieces.name or str(function.get("name") or "")
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                pieces.arguments.append(arguments)
            elif arguments is not None:  # a server that sends the arguments decoded, whole
                pieces.arguments.append(json.dumps(arguments, ensure_ascii=False))

    def _key(self, delta: dict[str, Any]) -> Any:
        if isinstance(delta.get("index"), int):
            return delta["index"]
        # Without an index (some compatible servers): a new id starts a call, else the
        # pieces continue the last one.
        call_id = str(delta.get("id") or "")
        if call_id and call_id not in self._ids:
            return ("id", call_id)
        return next(reversed(self._calls), ("id", call_id))

    def result(self) -> tuple[ToolCall, ...]:
        return read_calls(
            (
                {
                    "id": pieces.id,
                    "function": {"name": pieces.name, "arguments": "".join(pieces.arguments)},
                }
                for pieces in self._calls.values()
            ),
            "the streamed answer",
        )


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str | None
    parameters: dict[str, Any]
    strict: bool | None


def function_tools(tools: list[dict[str, Any]]) -> list[FunctionTool]:
    """The functions of a configuration's tools (OpenAI's format), for the providers that
    describe them in their own."""
    functions = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not isinstance(name, str) or not name:
            raise TargetError(
                "configuration_error",
                'every tool must be {"type": "function", "function": {"name", "parameters"}}',
            )
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        strict = function.get("strict")
        functions.append(
            FunctionTool(
                name=name,
                description=function.get("description"),
                parameters=parameters,
                strict=strict if isinstance(strict, bool) else None,
            )
        )
    return functions


def openai_message(turn: dict[str, Any]) -> dict[str, Any]:
    """A turn in the OpenAI shape. A tool's answer without a `tool_call_id` is a test's chat
    message, not part of an agent loop: it is sent as a user turn."""
    role = turn["role"]
    if role == "tool" and not turn.get("tool_call_id"):
        return {"role": "user", "content": turn["content"]}
    if role == "tool":
        content = turn.get("content")
        if not isinstance(content, str):
            content = "" if content is None else arguments_text(content)
        return {"role": "tool", "tool_call_id": turn["tool_call_id"], "content": content}
    message = {"role": role, "content": turn.get("content")}
    if role == "assistant" and turn.get("tool_calls"):
        message["tool_calls"] = [
            {
                "id": call["id"],
                "type": "function",
                "function": {
                    "name": call["function"]["name"],
                    "arguments": arguments_text(call["function"].get("arguments") or {}),
                },
            }
            for call in turn["tool_calls"]
        ]
    return message
