"""The executor of a run: job handlers that fan a run's cases out under its concurrency,
call the target, score every metric, and write results in small batches.

A run is queued as `run.chunk` jobs (see `database.results.service`); several workers (and
processes) share the chunks, and the first chunk to start marks the run running. Each result
is unique per (run, case position, repetition): a chunk resumed after a crash only does the
cases with no result yet, and a duplicate write is skipped, never doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from genai_prices import Usage, calc_price
from sqlalchemy.ext.asyncio import AsyncSession

from app.engine.gate import Gate, call_through, gate_for
from app.engine.scorers import (
    DETERMINISTIC,
    JudgeVerdict,
    MetricSpec,
    Observation,
    Verdict,
    score,
)
from app.engine.targets import TargetError, TargetReply, TargetRequest, call_target
from app.errors import InvalidInput
from app.runtime import get_runtime
from database.core import new_id
from database.models import crud as model_crud
from database.models.service import TargetConfig, resolve
from database.prompts import crud as prompt_crud
from database.results import crud
from database.results.models import TERMINAL, Run
from database.results.service import enqueue_chunks
from notifications import run_events
from notifications.publisher import Publisher
from notifications.service import current_publisher
from tasks.worker import JobContext
from utils.templates import render

log = structlog.get_logger(__name__)

MAX_PARALLEL_CHUNKS = 4
FLUSH_SECONDS = 0.25
FLUSH_ROWS = 100
FLUSHER_STOP_SECONDS = 10.0
PRICE_PROVIDERS = {"openai", "anthropic", "google", "groq", "mistral"}


# --- jobs -----------------------------------------------------------------------------------


async def start_legacy_run(ctx: JobContext) -> None:
    """`run.start`, as queued before POST /runs queued the chunks itself: queue them now."""
    run_id = uuid.UUID(ctx.job.payload["run_id"])
    async with ctx.transaction() as session:
        run = await crud.get_run(session, run_id, for_update=True)
        if run is None or run.status in TERMINAL:
            return
        positions = run.case_positions or range(run.total // run.repetitions)
        await enqueue_chunks(session, run, positions)


async def run_chunk(ctx: JobContext) -> None:
    """`run.chunk`: execute the chunk's cases that have no result yet, then maybe finish."""
    run_id = uuid.UUID(ctx.job.payload["run_id"])
    positions: list[int] = ctx.job.payload["positions"]
    async with ctx.transaction() as session:
        run = await crud.get_run(session, run_id)
        if run is None or run.status in TERMINAL:
            return
        if run.status == "queued" and await crud.set_status(
            session, run.id, "running", only_from=("queued",)
        ):
            await run_events.record(session, run, [run_events.started(run)])
    # Kept apart from the status change: a chunk starting at the same moment waits for that
    # row lock, and it is held only for the short transaction above.
    async with ctx.transaction() as session:
        done = await crud.done_keys(session, run.id, positions)
        cases = await crud.version_cases(session, run.test_set_version_id, positions)
        plan = await _plan(session, run)
    work = [
        (case, repetition)
        for case in cases
        for repetition in range(run.repetitions)
        if (case.position, repetition) not in done
    ]
    parallel = min(int(ctx.job.payload.get("chunks", 1)), MAX_PARALLEL_CHUNKS)
    concurrency = max(1, math.ceil(run.concurrency / parallel))
    writer = _Writer(ctx, run, positions, expected=len(cases) * run.repetitions)
    await _execute(ctx, run, plan, work, concurrency, writer)
    if writer.missing:
        # Never end a chunk with holes: failing makes the queue retry (and resume) it.
        raise RuntimeError(f"{writer.missing} case(s) of this chunk have no result yet")


async def mark_run_failed(ctx: JobContext, session: AsyncSession, error: str) -> None:
    """A run's job gave up for good: the run ends as failed rather than running forever."""
    run_id = uuid.UUID(ctx.job.payload["run_id"])
    run = await crud.get_run(session, run_id)
    if run is not None and await crud.set_status(session, run_id, "failed", error=error[:2000]):
        await run_events.record_end(session, run, "failed", error=error[:2000])


# --- what a run needs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    target: TargetConfig
    judges: dict[str, TargetConfig]
    metrics: list[MetricSpec]
    template: str | None
    system_prompt: str | None
    prompt_parameters: dict[str, Any]
    allow_private: bool


async def _plan(session: Any, run: Run) -> Plan:
    runtime = get_runtime()
    target_row = (
        await model_crud.get_model(session, run.target_model_id) if run.target_model_id else None
    )
    if target_row is None:
        raise RuntimeError("the run's target model configuration was deleted")
    metrics = [MetricSpec(**spec) for spec in run.metrics]
    judges: dict[str, TargetConfig] = {}
    for spec in metrics:
        if spec.judge_model_id and spec.judge_model_id not in judges:
            row = await model_crud.get_model(session, uuid.UUID(spec.judge_model_id))
            if row is not None:
                judges[spec.judge_model_id] = resolve(row, runtime.secret_box)
    version = (
        await prompt_crud.get_version_by_id(session, run.prompt_version_id)
        if run.prompt_version_id
        else None
    )
    return Plan(
        target=resolve(target_row, runtime.secret_box),
        judges=judges,
        metrics=metrics,
        template=version.template if version else None,
        system_prompt=version.system_prompt if version else None,
        prompt_parameters=dict(version.parameters) if version else {},
        allow_private=runtime.settings.allow_private_networks,
    )


# --- execution ------------------------------------------------------------------------------


class _Cancelled(Exception):
    pass


async def _execute(
    ctx: JobContext,
    run: Run,
    plan: Plan,
    work: list[tuple[crud.VersionCase, int]],
    concurrency: int,
    writer: _Writer,
) -> None:
    queued = iter(work)

    async def lane() -> None:
        # `concurrency` lanes share one iterator (next() never yields, so each case is taken
        # once): cheaper than a task per case queued on a semaphore.
        for case, repetition in queued:
            if writer.cancelled:
                return
            rows = await _process(ctx, run, plan, case, repetition)
            writer.add(*rows)

    flusher = asyncio.create_task(writer.flush_periodically())
    tasks = [asyncio.create_task(lane()) for _ in range(min(concurrency, len(work)))]
    watcher: asyncio.Task[Any] = asyncio.create_task(writer.cancelled_event.wait())
    try:
        pending: set[asyncio.Task[Any]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(
                pending | {watcher}, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(watcher)
            if watcher in done:
                break  # cancelled: the finally below stops what is in flight
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
    finally:
        watcher.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A write in progress is let finish: cancelling it mid-statement would cost its
        # database connection (the pool discards a connection in an unknown state).
        writer.stop()
        if not (await asyncio.wait({flusher}, timeout=FLUSHER_STOP_SECONDS))[0]:
            flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
    await writer.flush(last=True)


class _Writer:
    """Buffers a chunk's results and writes them in one transaction per batch (and notices
    cancels). The last batch is written with the chunk's closing checks, in one transaction:
    the run completes with the write of its last results."""

    def __init__(self, ctx: JobContext, run: Run, positions: list[int], *, expected: int) -> None:
        self.ctx = ctx
        self.run = run
        self.positions = positions
        self.expected = expected
        self.missing = 0
        self._stopping = False
        self.rows: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        self.cancelled_event = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def cancelled(self) -> bool:
        return self.cancelled_event.is_set()

    def add(self, result: dict[str, Any], evaluations: list[dict[str, Any]]) -> None:
        # Never waits for the database: a full batch wakes the flusher, and the lane moves on
        # to its next case (a lane writing a batch itself would idle for the round trip).
        self.rows.append((result, evaluations))
        if len(self.rows) >= FLUSH_ROWS:
            self._batch_full.set()

    def stop(self) -> None:
        """Ends flush_periodically (after a write in progress); the chunk writes the rest."""
        self._stopping = True
        self._batch_full.set()

    async def flush_periodically(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_SECONDS):
                    await self._batch_full.wait()
            self._batch_full.clear()
            if self._stopping:
                return
            try:
                await self.flush()
            except Exception as exc:  # e.g. the database restarting: keep the rows, try again
                log.warning("writing results failed; will retry", error=str(exc))

    async def flush(self, *, last: bool = False) -> None:
        async with self._lock:
            batch, self.rows = self.rows, []
            try:
                async with self.ctx.transaction() as session:
                    # The run's row lock first: writers of one run take turns, so the counts
                    # in each progress event include every result committed before it.
                    status = await crud.lock_run(session, self.run.id)
                    if status not in TERMINAL:
                        if batch:
                            await self._write(session, batch)
                        if last:
                            await self._close_chunk(session)
            except BaseException:
                self.rows = batch + self.rows  # not written: keep them for the next flush
                raise
            if status in TERMINAL:
                self.cancelled_event.set()  # cancelled (or ended elsewhere): stop, write no more

    async def _close_chunk(self, session: AsyncSession) -> None:
        """Counts what the chunk is missing and, when the whole run is written, completes it."""
        written = await crud.count_results(session, self.run.id, self.positions)
        self.missing = self.expected - written
        if (
            not self.missing
            and await crud.count_results(session, self.run.id) >= self.run.total
            and await crud.set_status(session, self.run.id, "completed")
        ):
            await run_events.record_end(session, self.run, "completed")

    async def _write(
        self, session: AsyncSession, batch: list[tuple[dict[str, Any], list[dict[str, Any]]]]
    ) -> None:
        inserted = set(
            await crud.insert_results(session, [r for r, _ in batch], [e for _, e in batch])
        )
        recorded = [
            run_events.result_recorded(result, evaluations)
            for result, evaluations in batch
            if result["id"] in inserted
        ]
        if recorded:
            await run_events.record_progress(session, self.run, recorded)


def _request(case: dict[str, Any], plan: Plan) -> TargetRequest:
    variables = dict(case.get("variables") or {})
    text = case.get("input")
    if plan.template is not None:
        context = {**variables, "input": text or "", "messages": case.get("messages") or []}
        text = render(plan.template, context, field="prompt")
    system = (
        render(plan.system_prompt, {**variables, "input": text or ""})
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


async def _process(
    ctx: JobContext, run: Run, plan: Plan, case_row: crud.VersionCase, repetition: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    case = case_row.case
    result: dict[str, Any] = {
        "id": new_id(),
        "organization_id": run.organization_id,
        "run_id": run.id,
        "position": case_row.position,
        "repetition": repetition,
        "test_id": case_row.test_id,
        "cached": False,
    }
    try:
        request = _request(case, plan)
    except InvalidInput as exc:
        return _errored(result, {"text": case.get("input")}, "prompt_error", exc.detail), []
    result["input"] = {
        key: value
        for key, value in (
            ("text", request.input),
            ("messages", request.messages),
            ("system", request.system_prompt),
        )
        if value
    }
    on_delta = _delta_sink(run, run_events.delta_target(case_row.position, repetition))
    try:
        reply, cached = await _answer(ctx, run, plan, request, on_delta)
    except TargetError as error:
        return _errored(result, result["input"], error.kind, error.message), []
    cost = _cost(plan.target, reply)
    result.update(
        output=storable(reply.output),
        latency_ms=round(reply.latency_ms, 2),
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        cost=cost,
        cached=cached,
    )
    observation = Observation(
        output=reply.output,
        input=request.input or json.dumps(request.messages or []),
        expected=case.get("expected_output"),
        context=list(case.get("context") or []),
        latency_ms=reply.latency_ms,
        cost=cost,
        tokens=(reply.input_tokens or 0) + (reply.output_tokens or 0)
        if reply.output_tokens is not None
        else None,
    )
    verdicts = await _score_all(run, plan, observation, (case_row.position, repetition))
    evaluations = [
        {
            "id": new_id(),
            "organization_id": run.organization_id,
            "run_id": run.id,
            "metric_id": uuid.UUID(spec.id) if spec.id else None,
            "metric_name": spec.name,
            "metric_type": spec.type,
            "score": verdict.score,
            "passed": verdict.passed,
            "reason": storable(verdict.reason[:4000]),
            "error": verdict.error,
            "input_tokens": verdict.input_tokens,
            "output_tokens": verdict.output_tokens,
            "cost": verdict.cost,
        }
        for spec, verdict in zip(plan.metrics, verdicts, strict=True)
    ]
    failed_metric = next((e for e in evaluations if e["error"]), None)
    if failed_metric is not None:
        result.update(
            status="errored",
            error_type="evaluation_error",
            error_message=storable(f"{failed_metric['metric_name']}: {failed_metric['error']}"),
        )
    else:
        result["status"] = "passed" if all(e["passed"] for e in evaluations) else "failed"
    return result, evaluations


async def _score_all(
    run: Run, plan: Plan, observation: Observation, case: tuple[int, int]
) -> list[Verdict]:
    """Deterministic metrics inline (no task: no wait for the loop's next turn), judges
    concurrently."""
    verdicts: dict[int, Verdict] = {}
    judged: list[int] = []
    for index, spec in enumerate(plan.metrics):
        if spec.type in DETERMINISTIC:
            verdicts[index] = await score(spec, observation, None)
        else:
            judged.append(index)
    if judged:
        specs = [plan.metrics[index] for index in judged]
        answers = await asyncio.gather(
            *(
                score(s, observation, _judge(plan, s, _delta_sink(run, _judge_key(case, s))))
                for s in specs
            )
        )
        verdicts.update(zip(judged, answers, strict=True))
    return [verdicts[index] for index in range(len(plan.metrics))]


def _errored(
    result: dict[str, Any], sent: dict[str, Any], kind: str, message: str
) -> dict[str, Any]:
    result.update(
        input=sent, status="errored", error_type=kind, error_message=storable(message[:4000])
    )
    return result


async def _call(
    run: Run,
    config: TargetConfig,
    request: TargetRequest,
    plan: Plan,
    on_delta: Callable[[str], None] | None,
) -> TargetReply:
    gate: Gate = gate_for(config.id, config.requests_per_minute)
    return await call_through(
        gate,
        _per_attempt(
            on_delta,
            lambda: call_target(
                config,
                request,
                allow_private_networks=plan.allow_private,
                time_limit=run.timeout_seconds,
                on_delta=on_delta,
            ),
        ),
    )


def _per_attempt(
    on_delta: Callable[[str], None] | None, call: Callable[[], Awaitable[TargetReply]]
) -> Callable[[], Awaitable[TargetReply]]:
    """The call as made for each attempt: a retried streamed call first resets the text."""

    def attempt() -> Awaitable[TargetReply]:
        if isinstance(on_delta, _DeltaSink):
            on_delta.new_attempt()
        return call()

    return attempt


class _DeltaSink:
    """Hands streamed text to this process's publisher (live only: never stored). A retried
    call first sends a reset: what a failed attempt streamed is not part of the answer."""

    def __init__(self, publisher: Publisher, run_id: uuid.UUID, key: dict[str, Any]) -> None:
        self.publisher = publisher
        self.run_id = run_id
        self.key = key
        self.attempts = 0

    def __call__(self, text: str) -> None:
        self.publisher.delta(self.run_id, {**self.key, "text": text})

    def new_attempt(self) -> None:
        if self.attempts:
            self.publisher.delta(self.run_id, {**self.key, "text": "", "reset": True})
        self.attempts += 1


def _delta_sink(run: Run, key: dict[str, Any]) -> _DeltaSink | None:
    publisher = current_publisher()
    return _DeltaSink(publisher, run.id, key) if publisher is not None else None


def _judge_key(case: tuple[int, int], spec: MetricSpec) -> dict[str, Any]:
    return run_events.delta_judge(case[0], case[1], spec.name)


async def _answer(
    ctx: JobContext,
    run: Run,
    plan: Plan,
    request: TargetRequest,
    on_delta: Callable[[str], None] | None,
) -> tuple[TargetReply, bool]:
    if not run.use_cache:
        return await _call(run, plan.target, request, plan, on_delta), False
    key = _cache_key(plan.target, request)
    async with ctx.transaction() as session:
        hit = await crud.cached_response(session, key)
    if hit is not None:
        return TargetReply(hit.output, 0.0, hit.input_tokens, hit.output_tokens), True
    reply = await _call(run, plan.target, request, plan, on_delta)
    async with ctx.transaction() as session:
        await crud.store_response(
            session,
            {
                "organization_id": run.organization_id,
                "key": key,
                "output": storable(reply.output),
                "input_tokens": reply.input_tokens,
                "output_tokens": reply.output_tokens,
            },
        )
    return reply, False


def storable(text: str) -> str:
    """PostgreSQL cannot store NUL in text: one in a model's answer must not sink the batch."""
    return text.replace("\x00", "\ufffd")


def _cache_key(config: TargetConfig, request: TargetRequest) -> str:
    material = {
        "provider": config.provider,
        "model": config.model,
        "base_url": config.base_url,
        "parameters": {**config.parameters, **request.parameters},
        "body_template": config.body_template,
        "input": request.input,
        "messages": request.messages,
        "system": request.system_prompt,
        "variables": request.variables if config.provider == "http" else None,
    }
    encoded = json.dumps(material, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def _cost(config: TargetConfig, reply: TargetReply) -> float | None:
    if reply.input_tokens is None or reply.output_tokens is None:
        return None
    if config.input_price_per_mtok is not None or config.output_price_per_mtok is not None:
        per_input = config.input_price_per_mtok or Decimal(0)
        per_output = config.output_price_per_mtok or Decimal(0)
        return float(
            (per_input * reply.input_tokens + per_output * reply.output_tokens) / Decimal(1_000_000)
        )
    if config.provider not in PRICE_PROVIDERS or not config.model:
        return None
    try:
        price = calc_price(
            Usage(input_tokens=reply.input_tokens, output_tokens=reply.output_tokens),
            model_ref=config.model,
            provider_id=config.provider,
        )
    except LookupError:
        return None
    return float(price.total_price)


def _judge(plan: Plan, spec: MetricSpec, on_delta: Callable[[str], None] | None) -> Any:
    config = plan.judges.get(spec.judge_model_id or "")
    if config is None:
        return None

    async def judge(prompt: str) -> Verdict:
        request = TargetRequest(input=prompt, parameters={"temperature": 0})
        call = _per_attempt(
            on_delta,
            lambda: call_target(
                config, request, allow_private_networks=plan.allow_private, on_delta=on_delta
            ),
        )
        try:
            reply = await call_through(gate_for(config.id, config.requests_per_minute), call)
        except TargetError as error:
            return Verdict(
                score=0.0, reason=error.message, error=f"judge call failed: {error.message}"
            )
        cost = _cost(config, reply)
        try:
            verdict = JudgeVerdict.model_validate_json(_json_object(reply.output))
        except ValueError:
            return Verdict(
                score=0.0,
                reason=reply.output[:500],
                error="the judge did not answer with a score between 0 and 1 and a reason",
                input_tokens=reply.input_tokens,
                output_tokens=reply.output_tokens,
                cost=cost,
            )
        return Verdict(
            score=verdict.score,
            reason=verdict.reason,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            cost=cost,
        )

    return judge


def _json_object(text: str) -> str:
    """The JSON object in a judge's reply (models wrap it in prose or code fences)."""
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text
