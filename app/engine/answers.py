"""The target's answer to one case: one call, an agent's loop over mocked tools, or a whole
conversation (with a simulated user when the test has one); through the opt-in response
cache, with an agent's steps and a conversation's turns handed on as they complete."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from app.engine import agent, conversation
from app.engine.calls import DeltaSink, call_model, cost
from app.engine.context import JobContext
from app.engine.plan import Plan
from database.prompts.service import prompt_context
from database.results import events
from database.results.crud import response_cache
from database.results.models import Run
from database.test_sets.crud.version_cases import VersionCase
from providers.targets import TargetConfig, TargetError, TargetReply, TargetRequest
from utils.errors import InvalidInput
from utils.storable import storable, storable_json
from utils.templates import render_off_loop

EventSink = Callable[[events.Event], None]
DEFAULT_MAX_STEPS = 10  # a run made before runs had their own bound
NO_SIMULATOR = (
    "the test has a simulated user, and the run no simulator model: set the run's"
    " simulator_model_id or the project's default judge"
)


@dataclass(frozen=True)
class Asked:
    reply: TargetReply
    cached: bool
    price: float | None  # the target's, and the simulated user's
    paid: float | None  # of that price, what the calls made now cost (not those from the cache)
    trajectory: list[dict[str, Any]] | None  # an agent's steps, or a conversation's turns


async def ask_target(
    ctx: JobContext,
    run: Run,
    plan: Plan,
    case: VersionCase,
    repetition: int,
    request: TargetRequest,
    live: DeltaSink | None,
    on_event: EventSink | None,
) -> Asked:
    target = plan.target
    assert target is not None
    prices: list[float | None] = []  # each call's price, as it completes
    paid: list[float | None] = []  # and the same for the calls not answered from the cache

    async def priced(config: TargetConfig, sent: TargetRequest) -> tuple[TargetReply, bool]:
        reply, cached = await cached_answer(
            ctx, run, plan, config, sent, live if config is target else None, repetition
        )
        prices.append(cost(config, reply))
        paid.append(None if cached else prices[-1])
        return reply, cached

    def loop(sent: TargetRequest, on_step: agent.StepSink | None) -> Any:
        return agent.answer(
            lambda each: priced(target, each),
            sent,
            tools=target.tools,
            mocks=case.case.get("tool_responses"),
            max_steps=case.case.get("max_steps") or run.max_steps or DEFAULT_MAX_STEPS,
            on_step=on_step,
        )

    try:
        talk = case.case.get("conversation")
        if talk is None:
            done = await loop(request, _sink(events.step_completed, case, repetition, on_event))
            return Asked(done.reply, done.cached, _total(prices), _total(paid), done.trajectory)
        simulator = replace(plan.simulator, tools=[]) if plan.simulator is not None else None
        if talk.get("simulated") is not None and simulator is None:
            raise TargetError("configuration_error", NO_SIMULATOR)

        async def simulate(sent: TargetRequest) -> TargetReply:
            assert simulator is not None
            if simulator.parameters.get("temperature") is not None:
                # As a judge's: the model's own temperature, where its configuration sets one
                # (reasoning models refuse any other).
                sent = replace(sent, parameters={})
            return (await priced(simulator, sent))[0]

        async def frame(user: str) -> str:
            """A user turn as sent: through the prompt's template, as a test's input is."""
            assert plan.template is not None
            context = prompt_context(request.variables or {}, input=user, messages=request.messages)
            try:
                return await render_off_loop(plan.template, context, field="prompt")
            except InvalidInput as exc:
                raise TargetError("configuration_error", exc.detail) from exc

        transcript = await conversation.converse(
            lambda sent: loop(sent, None),
            request,
            talk,
            simulate=simulate,
            on_turn=_sink(events.turn_completed, case, repetition, on_event),
            frame=frame if plan.template is not None else None,
        )
        return Asked(
            transcript.reply, transcript.cached, _total(prices), _total(paid), transcript.turns
        )
    except (TargetError, conversation.SimulatorFailed) as exc:
        # What the calls before it cost, and of that what was paid now: spent all the same.
        exc.spent, exc.paid = _total(prices), _total(paid)
        raise


def _total(prices: list[float | None]) -> float | None:
    return None if all(p is None for p in prices) else sum(p or 0.0 for p in prices)


def _sink(
    event: Callable[[int, int, dict[str, Any]], events.Event],
    case: VersionCase,
    repetition: int,
    on_event: EventSink | None,
) -> Callable[[dict[str, Any]], None] | None:
    if on_event is None:
        return None
    return lambda item: on_event(event(case.position, repetition, item))


async def cached_answer(
    ctx: JobContext,
    run: Run,
    plan: Plan,
    target: TargetConfig,
    request: TargetRequest,
    live: DeltaSink | None,
    repetition: int,
) -> tuple[TargetReply, bool]:
    """The target's answer and whether it came from the response cache (opt-in per run). Each
    repetition has answers of its own: another repetition is another sample of the target."""

    async def ask() -> TargetReply:
        return await call_model(
            target,
            request,
            allow_private=plan.allow_private,
            time_limit=run.timeout_seconds,
            on_delta=live,
        )

    if not run.use_cache:
        return await ask(), False
    key = _cache_key(target, request, repetition)
    async with ctx.transaction() as session:
        hit = await response_cache.cached_response(session, key)
    if hit is not None:
        calls = agent.calls_of([{"tool_calls": hit.tool_calls or []}])
        # No call was timed: its result stores no latency (case.py); 0 only adds nothing to
        # an agent's or a conversation's sum over its calls.
        return TargetReply(hit.output, 0.0, hit.input_tokens, hit.output_tokens, calls), True
    reply = await ask()
    async with ctx.transaction() as session:
        await response_cache.store_response(
            session,
            {
                "organization_id": run.organization_id,
                "key": key,
                "output": storable(reply.output),
                "input_tokens": reply.input_tokens,
                "output_tokens": reply.output_tokens,
                "tool_calls": storable_json([call.as_dict() for call in reply.tool_calls]) or None,
            },
        )
    return reply, False


def _cache_key(config: TargetConfig, request: TargetRequest, repetition: int) -> str:
    """What decides the answer, hashed. Not the timeout, nor the API key (the cache is the
    organization's own); an http target's headers only as a digest of them (they may hold
    secrets). An http target's key has more material than before, so no answer cached under
    an older key (which two targets differing in headers or method shared) is found again;
    the other providers' keys are unchanged, as were their answers.
    The repetition is in the key from the second on (the first's key is as it always was, so
    answers cached before stay found): each repetition of a case gets an answer of its own,
    so repetitions (and a repeat's new ones) sample the target rather than replay one answer,
    and a run made again with the same settings is answered repetition by repetition."""
    material: dict[str, Any] = {
        "provider": config.provider,
        "model": config.model,
        "base_url": config.base_url,
        "parameters": {**config.parameters, **request.parameters},
        "body_template": config.body_template,
        "response_path": config.response_path,
        "tool_calls_path": config.tool_calls_path,
        "input": request.input,
        "messages": request.messages,
        "system": request.system_prompt,
        "variables": request.variables if config.provider == "http" else None,
        "tools": config.tools or None,
    }
    if repetition:
        material["repetition"] = repetition
    if config.provider == "http":
        material |= {
            "method": (config.http_method or "POST").upper(),
            "headers": _headers_digest(config.http_headers),
            # What a streaming endpoint's answer is read from: its events, at this path.
            "stream_path": config.stream_path if config.stream else None,
        }
    encoded = json.dumps(material, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def _headers_digest(headers: dict[str, str]) -> str:
    """The headers sent, as a digest: names case-insensitively, values exactly."""
    named = sorted((name.lower(), value) for name, value in headers.items())
    return hashlib.sha256(json.dumps(named, ensure_ascii=False).encode()).hexdigest()
