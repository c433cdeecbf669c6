"""Runs: creation (pinning a version, freezing metrics), cancel, rerun, reads and summaries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.evaluations import crud as evaluation_crud
from database.evaluations.catalogue import is_judge
from database.evaluations.schemas import EvaluationRead
from database.models import crud as model_crud
from database.projects import crud as project_crud
from database.prompts import crud as prompt_crud
from database.prompts import service as prompt_service
from database.results import crud, events
from database.results.export import export_results
from database.results.models import TERMINAL, Result, Run
from database.results.schemas import (
    GroupSummary,
    MetricSummary,
    ResultRead,
    RunCounts,
    RunCreate,
    RunRead,
    RunSummary,
    StreamToken,
)
from database.test_sets import crud as test_set_crud
from database.test_sets import service as test_set_service
from tasks import queue
from utils.auth import Principal, issue_stream_token
from utils.errors import Conflict, InvalidInput, NotFound
from utils.runtime import Runtime, get_runtime

CHUNK_JOB = "run.chunk"  # a run is queued as chunks of its cases; the engine's handler runs them


async def get_run_or_404(
    session: AsyncSession, run_id: uuid.UUID, *, for_update: bool = False
) -> Run:
    run = await crud.get_run(session, run_id, for_update=for_update)
    if run is None:
        raise NotFound("Run not found")
    return run


async def _frozen_metrics(
    session: AsyncSession,
    metric_ids: Sequence[uuid.UUID],
    *,
    project_id: uuid.UUID,
    judge: uuid.UUID | None,
) -> list[dict[str, Any]]:
    metrics = await evaluation_crud.get_metrics(session, metric_ids)
    known = {m.id for m in metrics if m.project_id == project_id}
    unknown = [str(i) for i in metric_ids if i not in known]
    if unknown:
        raise InvalidInput(f"not metrics of this project: {', '.join(unknown)}", field="metric_ids")
    frozen = []
    for metric in metrics:
        judge_id = metric.judge_model_id or judge
        if is_judge(metric.type) and judge_id is None:
            raise InvalidInput(
                f"metric {metric.name!r} needs a judge: set its judge_model_id or the project's "
                "default judge",
                field="metric_ids",
            )
        frozen.append(
            {
                "id": str(metric.id),
                "name": metric.name,
                "type": metric.type,
                "parameters": metric.parameters,
                "threshold": metric.threshold,
                "operator": metric.operator,
                "negate": metric.negate,
                "weight": metric.weight,
                "judge_model_id": str(judge_id) if judge_id and is_judge(metric.type) else None,
            }
        )
    return frozen


async def create_run(
    session: AsyncSession, runtime: Runtime, principal: Principal, body: RunCreate
) -> Run:
    if body.concurrency > runtime.settings.max_run_concurrency:
        raise InvalidInput(
            f"must be at most {runtime.settings.max_run_concurrency}", field="concurrency"
        )
    test_set = await test_set_service.require_test_set(
        session, body.test_set_id, field="test_set_id"
    )
    project = await project_crud.get_project(session, test_set.project_id)
    assert project is not None
    target_id = body.target_model_id or project.default_target_model_id
    if target_id is None:
        raise InvalidInput(
            "is required: the project has no default target", field="target_model_id"
        )
    if await model_crud.get_model(session, target_id) is None:
        raise InvalidInput("no such model configuration", field="target_model_id")
    prompt_version_id = None
    if body.prompt_id is not None:
        prompt = await prompt_crud.get_prompt(session, body.prompt_id)
        if prompt is None or prompt.project_id != project.id:
            raise InvalidInput("no such prompt in the test set's project", field="prompt_id")
        try:
            prompt_version = await prompt_service.resolve_version(
                session, prompt, body.prompt_version
            )
        except NotFound as exc:
            raise InvalidInput(exc.detail, field="prompt_version") from exc
        prompt_version_id = prompt_version.id
    metric_ids = (
        body.metric_ids
        if body.metric_ids is not None
        else await evaluation_crud.test_set_metric_ids(session, test_set.id)
    )
    metrics = await _frozen_metrics(
        session, metric_ids, project_id=project.id, judge=project.default_judge_model_id
    )
    version, _ = await test_set_service.publish(session, test_set)
    if version.case_count == 0:
        raise InvalidInput("the test set has no tests", field="test_set_id")
    run = await crud.create_run(
        session,
        Run(
            organization_id=principal.organization_id,
            project_id=project.id,
            test_set_id=test_set.id,
            test_set_version_id=version.id,
            target_model_id=target_id,
            prompt_version_id=prompt_version_id,
            name=body.name,
            metrics=metrics,
            concurrency=body.concurrency,
            repetitions=body.repetitions,
            timeout_seconds=body.timeout_seconds,
            use_cache=body.use_cache,
            status="queued",
            total=version.case_count * body.repetitions,
        ),
    )
    await enqueue_chunks(session, run, range(version.case_count))
    return run


async def enqueue_chunks(session: AsyncSession, run: Run, positions: Sequence[int]) -> None:
    """Queues the run as chunk jobs, in the request's transaction: workers and processes share
    the chunks, and the first to start marks the run running."""
    size = max(1, get_runtime().settings.run_chunk_size // run.repetitions)
    chunks = [list(positions[i : i + size]) for i in range(0, len(positions), size)]
    await queue.enqueue_many(
        session,
        organization_id=run.organization_id,
        kind=CHUNK_JOB,
        jobs=[
            (
                {"run_id": str(run.id), "positions": chunk, "chunks": len(chunks)},
                f"run:{run.id}:chunk:{index}",
            )
            for index, chunk in enumerate(chunks)
        ],
    )


async def cancel_run(session: AsyncSession, run: Run) -> Run:
    if run.status in TERMINAL:
        raise Conflict(f"The run has already ended ({run.status})")
    if await crud.set_status(session, run.id, "cancelled"):
        await events.record_end(session, run, "cancelled")
    return await get_run_or_404(session, run.id)


async def rerun(session: AsyncSession, principal: Principal, run: Run) -> Run:
    if run.status not in TERMINAL:
        raise Conflict("The run has not ended yet; cancel it or wait")
    positions = await crud.positions_to_rerun(session, run.id)
    if not positions:
        raise Conflict("Nothing to rerun: no case failed or errored")
    child = await crud.create_run(
        session,
        Run(
            organization_id=principal.organization_id,
            project_id=run.project_id,
            test_set_id=run.test_set_id,
            test_set_version_id=run.test_set_version_id,
            target_model_id=run.target_model_id,
            prompt_version_id=run.prompt_version_id,
            parent_run_id=run.id,
            name=f"{run.name or 'run'} (rerun)",
            metrics=run.metrics,
            case_positions=positions,
            concurrency=run.concurrency,
            repetitions=run.repetitions,
            timeout_seconds=run.timeout_seconds,
            use_cache=False,
            status="queued",
            total=len(positions) * run.repetitions,
        ),
    )
    await enqueue_chunks(session, child, positions)
    return child


async def to_reads(session: AsyncSession, runs: Sequence[Run]) -> list[RunRead]:
    counts = await crud.counts(session, [r.id for r in runs])
    numbers = await test_set_crud.version_numbers(session, [r.test_set_version_id for r in runs])
    reads = []
    for run in runs:
        done, passed, failed, errored = counts[run.id]
        reads.append(
            RunRead(
                id=run.id,
                project_id=run.project_id,
                name=run.name,
                status=run.status,
                test_set_id=run.test_set_id,
                test_set_version_id=run.test_set_version_id,
                test_set_version=numbers.get(run.test_set_version_id, 0),
                target_model_id=run.target_model_id,
                prompt_version_id=run.prompt_version_id,
                parent_run_id=run.parent_run_id,
                metrics=run.metrics,
                concurrency=run.concurrency,
                repetitions=run.repetitions,
                timeout_seconds=run.timeout_seconds,
                use_cache=run.use_cache,
                counts=RunCounts(
                    total=run.total, done=done, passed=passed, failed=failed, errored=errored
                ),
                error=run.error,
                created_at=run.created_at,
                started_at=run.started_at,
                finished_at=run.finished_at,
            )
        )
    return reads


async def result_reads(
    session: AsyncSession, results: Sequence[Result], *, whole_run: uuid.UUID | None = None
) -> list[ResultRead]:
    """Results with their evaluations; `whole_run` fetches them by run, not by id list (a
    large run's ids would exceed the driver's limit on query parameters)."""
    if whole_run is not None:
        evaluations = await evaluation_crud.run_evaluations(session, whole_run)
    else:
        evaluations = await evaluation_crud.evaluations_of(session, [r.id for r in results])
    return [
        ResultRead.model_validate(result).model_copy(
            update={
                "evaluations": [
                    EvaluationRead.model_validate(e) for e in evaluations.get(result.id, [])
                ]
            }
        )
        for result in results
    ]


async def read_result(session: AsyncSession, result_id: uuid.UUID) -> ResultRead:
    result = await crud.get_result(session, result_id)
    if result is None:
        raise NotFound("Result not found")
    return (await result_reads(session, [result]))[0]


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


async def summary(session: AsyncSession, run: Run) -> RunSummary:
    read = (await to_reads(session, [run]))[0]
    stats = await crud.result_stats(session, run.id)
    metric_rows = await evaluation_crud.metric_stats(session, run.id)
    groups = {
        field: [
            GroupSummary(value=value, results=count, pass_rate=_round(rate))
            for value, count, rate in await crud.group_stats(session, run, field)
        ]
        for field in ("behavior", "category", "topic")
    }
    judge_costs = [row[5] for row in metric_rows if row[5] is not None]
    return RunSummary(
        run_id=run.id,
        status=read.status,
        counts=read.counts,
        pass_rate=_rate(read.counts.passed, read.counts.done),
        metrics=[
            MetricSummary(
                name=name, type=kind, mean_score=_round(mean), pass_rate=_round(rate), evaluated=n
            )
            for name, kind, mean, rate, n, _cost in metric_rows
        ],
        latency_ms={key: _round(stats[key]) for key in ("p50", "p95", "p99", "mean")},
        tokens={"input": stats["input_tokens"], "output": stats["output_tokens"]},
        cost=_round(stats["cost"], 6),
        judge_cost=_round(sum(judge_costs), 6) if judge_costs else None,
        errors=await crud.error_counts(session, run.id),
        by_behavior=groups["behavior"],
        by_category=groups["category"],
        by_topic=groups["topic"],
    )


def _round(value: float | None, digits: int = 4) -> float | None:
    return round(float(value), digits) if value is not None else None


# --- streams and exports --------------------------------------------------------------------


def stream_token(runtime: Runtime, principal: Principal, run: Run) -> StreamToken:
    token, expires_at = issue_stream_token(
        secret=runtime.secret_key,
        run_id=run.id,
        organization_id=principal.organization_id,
        lifetime=timedelta(minutes=runtime.settings.stream_token_minutes),
    )
    return StreamToken(
        token=token,
        expires_at=expires_at,
        events_url=f"/public/runs/{run.id}/events?token={token}",
        page_url=f"/public/runs/{run.id}?token={token}",
    )


async def export_run(session: AsyncSession, run: Run, fmt: str) -> bytes:
    results = await result_reads(session, await crud.all_results(session, run.id), whole_run=run.id)
    return export_results(run, results, fmt)


# --- execution: what the engine records as it runs a run's chunks ---------------------------


async def start_chunk(session: AsyncSession, run: Run) -> None:
    """A chunk starts: the first one marks a queued run running."""
    if run.status == "queued" and await crud.set_status(
        session, run.id, "running", only_from=("queued",)
    ):
        await events.record(session, run, [events.started(run)])


async def record_batch(
    session: AsyncSession,
    run: Run,
    batch: Sequence[tuple[dict[str, Any], list[dict[str, Any]]]],
) -> None:
    """Results with their evaluations (a result already written, by an earlier attempt at the
    chunk, is skipped with its evaluations), then their events and the run's counts."""
    inserted = await crud.insert_results(session, [result for result, _ in batch])
    await evaluation_crud.insert_evaluations(
        session,
        [
            {**evaluation, "result_id": result["id"]}
            for result, evaluations in batch
            if result["id"] in inserted
            for evaluation in evaluations
        ],
    )
    recorded = [
        events.result_recorded(result, evaluations)
        for result, evaluations in batch
        if result["id"] in inserted
    ]
    if recorded:
        await events.record_progress(session, run, recorded)


async def close_chunk(
    session: AsyncSession, run: Run, positions: Sequence[int], *, expected: int
) -> int:
    """How many results the chunk still misses; with none missing anywhere, the run
    completes (in this same transaction)."""
    missing = expected - await crud.count_results(session, run.id, positions)
    if (
        not missing
        and await crud.count_results(session, run.id) >= run.total
        and await crud.set_status(session, run.id, "completed")
    ):
        await events.record_end(session, run, "completed")
    return missing


async def fail_run(session: AsyncSession, run_id: uuid.UUID, error: str) -> None:
    """The run's work gave up for good: it ends as failed rather than running forever."""
    run = await crud.get_run(session, run_id)
    if run is not None and await crud.set_status(session, run_id, "failed", error=error[:2000]):
        await events.record_end(session, run, "failed", error=error[:2000])
