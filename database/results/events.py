"""A run's events: their types and payloads (documented for clients in app/public.py), recorded
in the transaction that makes each change (see crud.update_run)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.results import crud
from database.results.crud.recorded import Recorded, recorded_results
from database.results.models import Run

# Event types. A stream ends after a terminal one.
RUN_STARTED = "run.started"
RESULT_RECORDED = "result.recorded"
RUN_PROGRESS = "run.progress"
RUN_FINISHED = "run.finished"
RUN_CANCELLED = "run.cancelled"
RUN_VERDICT = "run.verdict"  # a gated run's gate result, right after it ends
STEP_COMPLETED = "step.completed"  # an agent's model call, with its tool calls and results
TURN_COMPLETED = "turn.completed"  # a conversation's turn: the user's message and the answer
# A stream ends after a batch of events whose last is one of these.
TERMINAL_EVENTS = frozenset({RUN_FINISHED, RUN_CANCELLED, RUN_VERDICT})
# Live only, never stored.
OUTPUT_DELTA = "output.delta"
EVALUATION_DELTA = "evaluation.delta"

# A result's event carries what a live row shows; the result has the rest (GET
# /results/{id}). The log stores it as a reference to the result (see `read_after`); what is
# sent to every subscriber is kept small: the output as a preview, a reason only where a
# metric did not pass, optional keys only when set.
OUTPUT_PREVIEW_CHARS = 500
REASON_CHARS = 200  # of a failed or errored evaluation's reason, and of an error message
PREVIEW_CHARS = 4000  # of an agent step's or a conversation turn's texts
# The arguments and answers of every tool call of one step or turn, together: 128 calls of
# 4,000 characters each made an event of megabytes (each stream replays hundreds at once).
CALLS_PREVIEW_CHARS = 4 * PREVIEW_CHARS
NAME_CHARS = 100  # of a tool call's id and name

Event = tuple[str, dict[str, Any]]


async def counts(session: AsyncSession, run: Run, total: int | None = None) -> dict[str, Any]:
    """`total`: the run's as read under its lock, where `run` was loaded before (a repeat may
    have raised it since)."""
    done, passed, failed, errored = (await crud.counts(session, [run.id]))[run.id]
    return {
        "total": run.total if total is None else total,
        "done": done,
        "passed": passed,
        "failed": failed,
        "errored": errored,
    }


def started(run: Run) -> Event:
    return RUN_STARTED, {
        "status": "running",
        "total": run.total,
        "concurrency": run.concurrency,
        "repetitions": run.repetitions,
        "metrics": [{"name": m["name"], "type": m["type"]} for m in run.metrics],
    }


def result_reference(result_id: uuid.UUID) -> Event:
    """A result's event as the log stores it: the result, committed in the same transaction,
    holds the rest, and `read_after` shows it as `result_recorded` does."""
    return RESULT_RECORDED, {"result_id": result_id}  # orjson writes it as text


def result_recorded(result: dict[str, Any], evaluations: list[dict[str, Any]]) -> Event:
    output = result.get("output")
    data: dict[str, Any] = {
        "result_id": str(result["id"]),
        "position": result["position"],
        "repetition": result["repetition"],
        "test_id": str(result["test_id"]) if result.get("test_id") else None,
        "status": result["status"],
        "output": output[:OUTPUT_PREVIEW_CHARS] if output is not None else None,
        "output_truncated": output is not None and len(output) > OUTPUT_PREVIEW_CHARS,
        "latency_ms": result.get("latency_ms"),
        "input_tokens": result.get("input_tokens"),
        "output_tokens": result.get("output_tokens"),
        "cost": result.get("cost"),
        "evaluations": [_evaluation(e) for e in evaluations],
    }
    if result.get("cached"):
        data["cached"] = True
    if result.get("error_type"):
        data["error_type"] = result["error_type"]
        data["error_message"] = (result.get("error_message") or "")[:REASON_CHARS]
    return RESULT_RECORDED, data


def _evaluation(evaluation: dict[str, Any]) -> dict[str, Any]:
    """A metric's verdict: why it did not pass, in short (the result has every reason)."""
    shown = {
        "metric": evaluation["metric_name"],
        "score": evaluation["score"],
        "passed": evaluation["passed"],
    }
    if not evaluation["passed"] or evaluation.get("error"):
        shown["reason"] = (evaluation.get("reason") or "")[:REASON_CHARS]
    if evaluation.get("error"):
        shown["error"] = evaluation["error"][:REASON_CHARS]
    return shown


def step_completed(position: int, repetition: int, step: dict[str, Any]) -> Event:
    """One step of an agent, as it completes (its text and the tools' answers previewed)."""
    text = step.get("text") or ""
    return STEP_COMPLETED, {
        "position": position,
        "repetition": repetition,
        **step,
        "text": text[:PREVIEW_CHARS],
        "text_truncated": len(text) > PREVIEW_CHARS,
        **_previewed_calls(step.get("tool_calls") or [], step.get("tool_results") or []),
        **({"error": step["error"][:PREVIEW_CHARS]} if step.get("error") else {}),
    }


def turn_completed(position: int, repetition: int, turn: dict[str, Any]) -> Event:
    """One turn of a conversation, as it completes (its texts previewed; an agent's steps
    within it are in the result's trajectory)."""
    shown = {key: value for key, value in turn.items() if key != "steps"}
    return TURN_COMPLETED, {
        "position": position,
        "repetition": repetition,
        **shown,
        "user": turn["user"][:PREVIEW_CHARS],
        "text": turn["text"][:PREVIEW_CHARS],
        "tool_calls": _previewed_calls(turn.get("tool_calls") or [], [])["tool_calls"],
        "steps": len(turn.get("steps") or []) or 1,
    }


def _previewed_calls(
    calls: list[dict[str, Any]], results: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Tool calls and their answers, each text cut at PREVIEW_CHARS and all of them together
    at CALLS_PREVIEW_CHARS (the first ones whole, the later ones shorter, then empty); ids
    and names at NAME_CHARS."""
    left = CALLS_PREVIEW_CHARS

    def cut(value: Any, *, whole: bool = False) -> Any:
        """The text, cut; `whole`: the value itself (arguments as decoded) when not cut."""
        nonlocal left
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        shown = text[: min(PREVIEW_CHARS, left)]
        left -= len(shown)
        return value if whole and len(shown) == len(text) else shown

    def named(item: dict[str, Any]) -> dict[str, Any]:
        return {
            **item,
            **{key: str(item[key])[:NAME_CHARS] for key in ("id", "name") if key in item},
        }

    previewed_calls = [
        {**named(call), "arguments": cut(call["arguments"], whole=True)} for call in calls
    ]
    previewed_results = [
        {**named(result), "content": cut(result["content"])}
        if "content" in result
        else {**named(result), "error": cut(str(result.get("error", "")))}
        for result in results
    ]
    return {"tool_calls": previewed_calls, "tool_results": previewed_results}


@dataclass(slots=True)
class ReadEvent:
    seq: int
    type: str
    data: Any


async def read_after(
    session: AsyncSession, run_id: uuid.UUID, after: int, *, limit: int
) -> list[ReadEvent]:
    """The run's events after seq `after`, in order, as clients see them: each stored
    reference to a result shown with that result (the streams' reader)."""
    rows = await crud.events_after(session, run_id, after, limit=limit)
    referenced = [uuid.UUID(row.data["result_id"]) for row in rows if _is_reference(row)]
    # One character past the preview tells that the output is longer.
    found = await recorded_results(
        session,
        run_id,
        referenced,
        output_chars=OUTPUT_PREVIEW_CHARS + 1,
        text_chars=REASON_CHARS,
    )
    return [ReadEvent(row.seq, row.type, _shown(row, found)) for row in rows]


def _is_reference(row: Any) -> bool:
    return (
        row.type == RESULT_RECORDED
        and isinstance(row.data, dict)
        and row.data.keys() == {"result_id"}
    )


def _shown(row: Any, found: dict[uuid.UUID, Recorded]) -> Any:
    if not _is_reference(row):
        return row.data
    recorded = found.get(uuid.UUID(row.data["result_id"]))
    return row.data if recorded is None else result_recorded(*recorded)[1]


async def record(
    session: AsyncSession,
    run: Run,
    changes: list[Event],
    *,
    spent: float = 0.0,
    status: str | None = None,
    error: str | None = None,
    gate_result: dict[str, Any] | None = None,
    only_from: tuple[str, ...] | None = None,
) -> tuple[int, float] | None:
    """The changes, with what they cost and the run's new status, in the transaction's one
    update of the run's row (crud.update_run): (last seq, spent), None when the status did
    not move."""
    return await crud.update_run(
        session,
        run_id=run.id,
        organization_id=run.organization_id,
        events=changes,
        spent=spent,
        status=status,
        error=error,
        gate_result=gate_result,
        only_from=only_from,
    )


async def progress(session: AsyncSession, run: Run, total: int) -> Event:
    """The run's counts as they now stand (after the changes before it), of its `total` as
    locked."""
    return RUN_PROGRESS, await counts(session, run, total)


async def ended(session: AsyncSession, run: Run, status: str, *, error: str | None) -> Event:
    data: dict[str, Any] = {"status": status, **await counts(session, run)}
    if error is not None:
        data["error"] = error
    if run.gate is not None:
        data["continues"] = True  # the gate's verdict follows: the stream does not end here
    return (RUN_CANCELLED if status == "cancelled" else RUN_FINISHED), data


def verdict(gate_result: dict[str, Any]) -> Event:
    return RUN_VERDICT, gate_result


def delta_target(position: int, repetition: int) -> dict[str, Any]:
    return {"type": OUTPUT_DELTA, "position": position, "repetition": repetition}


def delta_judge(position: int, repetition: int, metric: str) -> dict[str, Any]:
    return {**delta_target(position, repetition), "type": EVALUATION_DELTA, "metric": metric}
