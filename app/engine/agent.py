"""An agent's loop, run by the engine: call the model; when it calls tools and the test mocks
them, hand it the mocked answers and call again, until it answers without calling a tool or
reaches its step bound. Every step (the model's text, its calls, the tools' answers) is kept,
and handed on as it completes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from database.evaluations.agent_checks import within
from providers.config import ToolCall
from providers.targets import TargetError, TargetReply, TargetRequest
from providers.tool_calls import arguments_text
from utils import fastjson
from utils.storable import storable, storable_json

# What one case's steps may hold, and send back to the model as its history: each call gets its
# mock's whole answer (up to 256 KB), and a model may make 128 calls a step for 50 steps, which
# was 1.6 GB in one result's row (past what PostgreSQL stores, failing its whole chunk again
# and again) and requests growing by as much each step.
MAX_TRAJECTORY_BYTES = 16 * 1024 * 1024

Ask = Callable[[TargetRequest], Awaitable[tuple[TargetReply, bool]]]
StepSink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Answer:
    """The final reply (its text the last step's; latency and tokens over every step; every
    tool call in order), whether all of it came from the cache, and the steps when there are
    tools in play (None for a plain answer)."""

    reply: TargetReply
    cached: bool
    trajectory: list[dict[str, Any]] | None


async def answer(
    ask: Ask,
    request: TargetRequest,
    *,
    tools: list[dict[str, Any]],
    mocks: list[dict[str, Any]] | None,
    max_steps: int,
    on_step: StepSink | None = None,
) -> Answer:
    known = {tool["function"]["name"] for tool in tools}
    first = None
    if not known:
        first = await ask(request)
        if not first[0].tool_calls:  # a plain answer (most runs): no steps, nothing to combine
            return Answer(first[0], first[1], None)
    return await _loop(ask, request, known, mocks, max_steps, on_step, first)


async def _loop(
    ask: Ask,
    request: TargetRequest,
    known: set[str],
    mocks: list[dict[str, Any]] | None,
    max_steps: int,
    on_step: StepSink | None,
    first: tuple[TargetReply, bool] | None = None,
) -> Answer:
    history = request.chat()
    steps: list[dict[str, Any]] = []
    replies: list[TargetReply] = []
    cached_all = True
    current = request
    kept = 0  # bytes of the steps so far
    for number in range(1, max_steps + 1):
        if first is not None:  # already asked
            (reply, cached), first = first, None
        else:
            try:
                reply, cached = await ask(current)
            except TargetError as exc:
                exc.trajectory = steps or None  # the case is errored, with the steps before
                raise
        replies.append(reply)
        cached_all = cached_all and cached
        step: dict[str, Any] = {
            "step": number,
            "text": storable(reply.output),
            "tool_calls": storable_json([call.as_dict() for call in reply.tool_calls]),
            "latency_ms": round(reply.latency_ms, 2),
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
        }
        steps.append(step)
        kept += len(reply.output.encode()) + len(fastjson.dumps_bytes(step["tool_calls"]))
        goes_on = bool(reply.tool_calls) and mocks is not None
        if goes_on:
            assert mocks is not None
            results = [_mocked(call, mocks, known) for call in reply.tool_calls]
            kept += len(fastjson.dumps_bytes(results))
            if kept > MAX_TRAJECTORY_BYTES:
                results = [_not_kept(result) for result in results]
            step["tool_results"] = storable_json(results)  # what the model is sent: `results`
            failures = [result["error"] for result in step["tool_results"] if "error" in result]
            if failures:
                step["error"] = "; ".join(failures)
            if kept > MAX_TRAJECTORY_BYTES:
                step["stopped"] = "size"  # the loop ends here, as at its step bound
                goes_on = False
            elif number == max_steps:
                step["stopped"] = "max_steps"  # still calling tools: the loop ends here
                goes_on = False
        if on_step is not None and (known or reply.tool_calls):  # a plain answer has no steps
            on_step(step)
        if not goes_on:
            break
        history += [
            _assistant_turn(reply),
            *(_tool_turn(result) for result in results),
        ]
        current = replace(request, input=None, messages=history)
    trajectory = steps if known or any(step["tool_calls"] for step in steps) else None
    return Answer(combined(replies), cached_all, trajectory)


def calls_of(trajectory: list[dict[str, Any]]) -> tuple[ToolCall, ...]:
    """Every tool call of a stored trajectory, in order."""
    return tuple(
        ToolCall(call["id"], call["name"], call["arguments"])
        for step in trajectory
        for call in step.get("tool_calls") or []
    )


def combined(replies: list[TargetReply]) -> TargetReply:
    def total(values: list[int | None]) -> int | None:
        return None if any(value is None for value in values) else sum(v or 0 for v in values)

    return TargetReply(
        output=replies[-1].output,
        latency_ms=sum(reply.latency_ms for reply in replies),
        input_tokens=total([reply.input_tokens for reply in replies]),
        output_tokens=total([reply.output_tokens for reply in replies]),
        tool_calls=tuple(call for reply in replies for call in reply.tool_calls),
    )


def _not_kept(result: dict[str, Any]) -> dict[str, Any]:
    limit = MAX_TRAJECTORY_BYTES // (1024 * 1024)
    error = f"not kept: the case's steps would hold more than {limit} MB"
    return {"id": result["id"], "name": result["name"], "error": error}


def _mocked(call: ToolCall, mocks: list[dict[str, Any]], known: set[str]) -> dict[str, Any]:
    """The test's answer to one call: the first mock of its tool whose arguments the call's
    include, else the first default (a mock without a tool name) that fits; an error the
    model is told about (and the step records) otherwise."""
    found: dict[str, Any] = {"id": call.id, "name": call.name}
    if known and call.name not in known:
        return {**found, "error": f"the model called {call.name!r}, a tool it was not given"}
    for wanted_name in (call.name, None):
        for mock in mocks:
            if mock.get("name") == wanted_name and _fits(call.arguments, mock.get("arguments")):
                return {**found, "content": mock["response"]}
    return {**found, "error": f"the test mocks no response for this call of {call.name!r}"}


def _fits(arguments: dict[str, Any] | str, wanted: dict[str, Any] | None) -> bool:
    if wanted is None:
        return True
    return isinstance(arguments, dict) and within(arguments, wanted)


def _assistant_turn(reply: TargetReply) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": reply.output or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": arguments_text(call.arguments),
                },
            }
            for call in reply.tool_calls
        ],
    }


def _tool_turn(result: dict[str, Any]) -> dict[str, Any]:
    content = result["content"] if "content" in result else {"error": result["error"]}
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return {"role": "tool", "tool_call_id": result["id"], "content": text}
