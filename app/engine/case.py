"""One case of a run, once: render the request, get the answer (or the cached one), score every
metric, and return the result row with its evaluation rows (written later, in batches)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import uuid
from collections.abc import Callable
from typing import Any

from app.engine import agent, answers
from app.engine.calls import call_owner, delta_sink
from app.engine.context import JobContext
from app.engine.conversation import SimulatorFailed, is_transcript, steps_of
from app.engine.judges import judge_for
from app.engine.plan import Plan
from database.evaluations.catalogue import CATALOGUE, FROM_TEST, for_case, score
from database.evaluations.scoring import MetricSpec, Observation, ScoringError, Verdict
from database.prompts.service import prompt_context
from database.results import events
from database.results.models import Result, Run
from database.test_sets.crud.version_cases import VersionCase
from providers.targets import TargetError, TargetReply, TargetRequest
from utils import tracing
from utils.errors import InvalidInput
from utils.ids import new_id
from utils.templates import TemplateTooCostly, render_off_loop

Row = dict[str, Any]
EventSink = Callable[[events.Event], None]


async def run_case(
    ctx: JobContext,
    run: Run,
    plan: Plan,
    case: VersionCase,
    repetition: int,
    source: Result | None = None,
    on_event: EventSink | None = None,
) -> tuple[Row, list[Row]]:
    """`source`: a rescore's stored result of this case, whose output (and trajectory) is
    scored again. `on_event`: where an agent's completed steps go, as they complete."""
    result = _new_result(run, case, repetition)
    if not tracing.enabled():  # the owner is read only as the attributes of spans
        return await _run_case(ctx, run, plan, case, repetition, result, source, on_event)
    owner = {"assay.run_id": str(run.id), "assay.result_id": str(result["id"])}
    token = call_owner.set(owner)
    try:
        with tracing.span(
            "assay.case",
            {**owner, "assay.test_id": str(case.test_id), "assay.repetition": repetition},
        ) as span:
            row, evaluations = await _run_case(
                ctx, run, plan, case, repetition, result, source, on_event
            )
            if span is not None:
                span.set_attribute("assay.status", row.get("status") or "")
            return row, evaluations
    finally:
        call_owner.reset(token)


async def _run_case(
    ctx: JobContext,
    run: Run,
    plan: Plan,
    case: VersionCase,
    repetition: int,
    result: Row,
    source: Result | None,
    on_event: EventSink | None,
) -> tuple[Row, list[Row]]:
    try:
        request = await _request(case.case, plan)
    except InvalidInput as exc:
        sent = {"text": case.case.get("input")}
        kind = "configuration_error" if isinstance(exc, TemplateTooCostly) else "prompt_error"
        return _errored(result, sent, kind, exc.detail), []
    result["input"] = _sent(request)
    if case.case.get("conversation") is not None:
        result["input"]["conversation"] = case.case["conversation"]
    streams = plan.target is not None and plan.target.stream  # nothing to hand on otherwise
    live = delta_sink(run.id, events.delta_target(case.position, repetition)) if streams else None
    trajectory = None
    try:
        if source is not None:
            reply, cached, price = _stored(source)
            trajectory = source.trajectory
        elif run.recorded_field is not None:
            reply, cached, price = _recorded(case.case, run.recorded_field), True, None
        else:
            asked = await answers.ask_target(
                ctx, run, plan, case, repetition, request, live, on_event
            )
            reply, cached, price = asked.reply, asked.cached, asked.price
            trajectory = asked.trajectory
            result["paid"] = asked.paid
    except (TargetError, NoOutput) as error:
        if isinstance(error, TargetError):  # an agent's or a conversation's calls before it
            result.update(cost=error.spent, paid=error.paid, trajectory=error.trajectory)
        return _errored(result, result["input"], error.kind, error.message), []
    except SimulatorFailed as exc:
        result.update(cost=exc.spent, paid=exc.paid, trajectory=exc.trajectory)
        return _errored(result, result["input"], "simulator_error", str(exc)), []
    latency = _latency(reply, cached, source)
    result.update(
        output=reply.output,
        latency_ms=latency,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        cost=price,
        cached=cached,
        trajectory=trajectory,
    )
    observation = _observation(case.case, request, reply, price, trajectory, plan.tools)
    if latency is None:
        observation = dataclasses.replace(observation, latency_ms=None)
    metadata = case.case.get("metadata") or {}
    scored = await _score_all(run, plan, observation, metadata, (case.position, repetition))
    evaluations = _evaluation_rows(run, scored)
    return _settled(result, evaluations), evaluations


def _new_result(run: Run, case: VersionCase, repetition: int) -> Row:
    return {
        "id": new_id(),
        "organization_id": run.organization_id,
        "run_id": run.id,
        "position": case.position,
        "repetition": repetition,
        "test_id": case.test_id,
        "cached": False,
    }


async def _request(case: dict[str, Any], plan: Plan) -> TargetRequest:
    """The case as sent: its input through the prompt version's template, if any (a
    conversation's turns go through it each, as they are sent; one without an input sends
    none)."""
    variables = dict(case.get("variables") or {})
    text = case.get("input")
    context = prompt_context(variables, input=text, messages=case.get("messages"))
    if plan.template is not None and (case.get("conversation") is None or text):
        text = await render_off_loop(plan.template, context, field="prompt")
    system = (
        await render_off_loop(
            plan.system_prompt, context, field="prompt", template_field="system_prompt"
        )
        if plan.system_prompt
        else None
    )
    return TargetRequest(
        input=text,
        messages=case.get("messages"),
        system_prompt=system,
        variables=variables,
        parameters=plan.prompt_parameters,
    )


def _sent(request: TargetRequest) -> dict[str, Any]:
    """What the result stores of the request."""
    sent = (
        ("text", request.input),
        ("messages", request.messages),
        ("system", request.system_prompt),
    )
    return {key: value for key, value in sent if value}


class NoOutput(Exception):
    """A recorded or reused output that is not there."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _stored(source: Result) -> tuple[TargetReply, bool, float | None]:
    """A stored result's answer, as it was (an errored one stays errored)."""
    if source.status == "errored" and source.output is None:
        raise NoOutput(source.error_type or "error", source.error_message or "")
    reply = TargetReply(
        source.output or "",
        source.latency_ms or 0.0,
        source.input_tokens,
        source.output_tokens,
        agent.calls_of(source.trajectory or []),
    )
    return reply, True, source.cost


def _latency(reply: TargetReply, cached: bool, source: Result | None) -> float | None:
    """The answer's latency, none where no call was timed (a recorded answer, or the response
    cache's): stored as 0 it would count as an instant answer in the run's percentiles and a
    comparison's deltas. A rescore keeps its source's. (Its own results are `cached`, so a
    rescore of a rescore reads the latency, not the flag; a cached source with 0 ms was stored
    before untimed answers had none.)"""
    if source is not None:
        return None if source.cached and not source.latency_ms else source.latency_ms
    return None if cached else round(reply.latency_ms, 2)


def _recorded(case: dict[str, Any], field: str) -> TargetReply:
    """The output recorded with the case, in its metadata under `field`."""
    value = (case.get("metadata") or {}).get(field)
    if value is None:
        raise NoOutput("recorded_output_missing", f"the test's metadata has no {field!r}")
    return TargetReply(value if isinstance(value, str) else json.dumps(value), 0.0, None, None)


def _observation(
    case: dict[str, Any],
    request: TargetRequest,
    reply: TargetReply,
    price: float | None,
    trajectory: list[dict[str, Any]] | None,
    tools: list[dict[str, Any]],
) -> Observation:
    turns = trajectory if trajectory and is_transcript(trajectory) else []
    simulated = (case.get("conversation") or {}).get("simulated") or {}
    opening = turns[0]["user"] if turns else None
    return Observation(
        output=reply.output,
        input=request.input or opening or json.dumps(request.messages or []),
        expected=case.get("expected_output"),
        context=list(case.get("context") or []),
        latency_ms=reply.latency_ms,
        cost=price,
        tokens=(reply.input_tokens or 0) + (reply.output_tokens or 0)
        if reply.output_tokens is not None
        else None,
        tool_calls=[call.as_dict() for call in reply.tool_calls],
        trajectory=steps_of(turns) if turns else trajectory or [],
        expected_tool_calls=case.get("expected_tool_calls"),
        tools=tools,
        turns=turns,
        goal=simulated.get("goal"),
        role=request.system_prompt,
    )


async def _score_all(
    run: Run,
    plan: Plan,
    observation: Observation,
    metadata: dict[str, Any],
    case: tuple[int, int],
) -> list[tuple[MetricSpec, Verdict]]:
    """Every metric that applies to the case (one taking each test's parameters applies where
    the test gives them): checks inline (no task: no wait for the loop's next turn), judges
    concurrently."""
    metrics: list[MetricSpec] = []
    verdicts: dict[int, Verdict] = {}
    judged: list[int] = []
    for spec in plan.metrics:
        try:
            if FROM_TEST in spec.parameters:  # a test's own parameters, checked: off the loop
                resolved = await asyncio.to_thread(for_case, spec, metadata)
            else:
                resolved = for_case(spec, metadata)
        except ScoringError as exc:
            verdicts[len(metrics)] = Verdict(score=0.0, reason=str(exc), error=str(exc))
            metrics.append(spec)
            continue
        if resolved is None:
            continue
        if CATALOGUE[resolved.type].judged:
            judged.append(len(metrics))
        else:
            verdicts[len(metrics)] = await score(resolved, observation, None)
        metrics.append(resolved)
    if judged:
        answers = await asyncio.gather(
            *(_judged(run, plan, metrics[index], observation, case) for index in judged)
        )
        verdicts.update(zip(judged, answers, strict=True))
    return [(spec, verdicts[index]) for index, spec in enumerate(metrics)]


async def _judged(
    run: Run, plan: Plan, spec: MetricSpec, observation: Observation, case: tuple[int, int]
) -> Verdict:
    live = delta_sink(run.id, events.delta_judge(case[0], case[1], spec.name))
    return await score(spec, observation, judge_for(plan, spec, live))


def _evaluation_rows(run: Run, scored: list[tuple[MetricSpec, Verdict]]) -> list[Row]:
    return [
        {
            "id": new_id(),
            "organization_id": run.organization_id,
            "run_id": run.id,
            "metric_id": _metric_id(spec.id) if spec.id else None,
            "metric_name": spec.name,
            "metric_type": spec.type,
            "score": verdict.score,
            "passed": verdict.passed,
            "reason": verdict.reason[:4000],
            "error": None if verdict.error is None else verdict.error[:4000],
            "input_tokens": verdict.input_tokens,
            "output_tokens": verdict.output_tokens,
            "cost": verdict.cost,
        }
        for spec, verdict in scored
    ]


@functools.lru_cache(maxsize=1024)
def _metric_id(text: str) -> uuid.UUID:
    """A frozen metric's id, parsed once (every case of a run names the same few)."""
    return uuid.UUID(text)


def _settled(result: Row, evaluations: list[Row]) -> Row:
    """Passed when every metric passed; errored when a metric could not score, or when none
    applies (every metric takes its parameters from tests, and this one gives none): a case
    nothing judged has not passed."""
    failed_metric = next((e for e in evaluations if e["error"]), None)
    if not evaluations:
        result.update(
            status="errored",
            error_type="not_scored",
            error_message="no metric applies to this test: each of the run's metrics takes its"
            " parameters from the test's metadata, and this test gives none",
        )
    elif failed_metric is not None:
        result.update(
            status="errored",
            error_type="evaluation_error",
            error_message=f"{failed_metric['metric_name']}: {failed_metric['error']}",
        )
    else:
        result["status"] = "passed" if all(e["passed"] for e in evaluations) else "failed"
    return result


def _errored(result: Row, sent: dict[str, Any], kind: str, message: str) -> Row:
    result.update(input=sent, status="errored", error_type=kind, error_message=message[:4000])
    return result
