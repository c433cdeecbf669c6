"""Runs: creation (pinning a version, freezing metrics, a gate and a budget), queueing, cancel,
comparison with a baseline, a project's baseline, stream tokens and exports."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.evaluations import crud as evaluation_crud
from database.evaluations import service as evaluation_service
from database.evaluations.catalogue import is_judge
from database.models import crud as model_crud
from database.models.models import ModelConfig
from database.projects import crud as project_crud
from database.projects.models import Project
from database.prompts import crud as prompt_crud
from database.prompts import service as prompt_service
from database.results import crud, gates, model_pins
from database.results.comparison import CompareOptions, compare
from database.results.comparison_schemas import Comparison
from database.results.models import CHUNK_JOB, TERMINAL, Run
from database.results.reads import get_run_or_404
from database.results.schemas import RunCreate, StreamToken
from database.test_sets import crud as test_set_crud
from database.test_sets import service as test_set_service
from tasks import queue
from utils.auth import Principal, issue_stream_token
from utils.errors import Conflict, InvalidInput, NotFound
from utils.runtime import Runtime, get_runtime


async def frozen_metrics(
    session: AsyncSession,
    metric_ids: Sequence[uuid.UUID],
    *,
    project_id: uuid.UUID,
    judge: uuid.UUID | None,
) -> list[dict[str, Any]]:
    evaluation_service.check_listed_once(metric_ids)
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


def check_concurrency(concurrency: int) -> int:
    limit = get_runtime().settings.max_run_concurrency
    if concurrency > limit:
        raise InvalidInput(f"must be at most {limit}", field="concurrency")
    return concurrency


async def create_run(
    session: AsyncSession,
    principal: Principal,
    body: RunCreate,
    *,
    request: tuple[str, str] | None = None,
) -> Run:
    """`request`: the Idempotency-Key it was asked with, and the request's digest (see
    run_requests)."""
    check_concurrency(body.concurrency)
    test_set = await test_set_service.require_test_set(
        session, body.test_set_id, field="test_set_id"
    )
    project = await project_crud.get_project(session, test_set.project_id)
    assert project is not None
    target = await _target(session, body, project)
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
    metrics = await frozen_metrics(
        session, metric_ids, project_id=project.id, judge=project.default_judge_model_id
    )
    if not metrics:  # every case would pass with nothing to fail it: a silent green
        raise InvalidInput(
            "a run needs at least one metric to decide pass or fail: name some, or give the "
            "test set default metrics",
            field="metric_ids",
        )
    version, _ = await test_set_service.publish(session, test_set)
    if version.case_count == 0:
        raise InvalidInput("the test set has no tests", field="test_set_id")
    if target is not None:
        await _check_tools(session, version.id, target)
    simulator_id = body.simulator_model_id
    if simulator_id is not None and await model_crud.get_model(session, simulator_id) is None:
        raise InvalidInput("no such model configuration", field="simulator_model_id")
    # Resolved now, as a gate's baseline is: the project's default judge plays the simulated
    # users a run has (its workers then read no project to find out).
    if simulator_id is None and await test_set_crud.has_simulated_users(session, version.id):
        simulator_id = project.default_judge_model_id
        if simulator_id is None:
            raise InvalidInput(
                "the test set has simulated users: name a model to play them, or give the"
                " project a default judge",
                field="simulator_model_id",
            )
    gate = await gates.prepare(session, project, body.gate, metrics) if body.gate else None
    run = Run(
        organization_id=principal.organization_id,
        project_id=project.id,
        test_set_id=test_set.id,
        test_set_version_id=version.id,
        target_model_id=target.id if target is not None else None,
        prompt_version_id=prompt_version_id,
        prompted=prompt_version_id is not None,
        name=body.name,
        metrics=metrics,
        concurrency=body.concurrency,
        repetitions=body.repetitions,
        timeout_seconds=body.timeout_seconds,
        max_steps=body.max_steps,
        simulator_model_id=simulator_id,
        use_cache=body.use_cache and body.recorded_output is None,
        recorded_field=body.recorded_output,
        gate=gate,
        max_cost=body.max_cost,
        status="queued",
        total=version.case_count * body.repetitions,
        request_key=request[0] if request else None,
        request_digest=request[1] if request else None,
    )
    await model_pins.pin(session, run)
    run = await crud.create_run(session, run)
    await enqueue_chunks(session, run, range(version.case_count), range(body.repetitions))
    return run


async def _target(session: AsyncSession, body: RunCreate, project: Project) -> ModelConfig | None:
    """The model the run calls; none when it scores recorded outputs."""
    if body.recorded_output is not None:
        if body.target_model_id is not None:
            raise InvalidInput(
                "give a target or recorded outputs, not both", field="target_model_id"
            )
        return None
    target_id = body.target_model_id or project.default_target_model_id
    if target_id is None:
        raise InvalidInput(
            "is required: the project has no default target", field="target_model_id"
        )
    target = await model_crud.get_model(session, target_id)
    if target is None:
        raise InvalidInput("no such model configuration", field="target_model_id")
    return target


async def _check_tools(session: AsyncSession, version_id: uuid.UUID, target: ModelConfig) -> None:
    """Every tool the version's cases expect or mock is one the target can call."""
    known = {tool["function"]["name"] for tool in target.tools or []}
    named = await test_set_crud.tool_names(session, version_id)
    unknown = [(position, name) for position, name in named if name not in known]
    if unknown:
        names = sorted({name for _, name in unknown})
        raise InvalidInput(
            f"the tests name tools the model configuration {target.name!r} does not have:"
            f" {', '.join(names[:20])} (first at case position {unknown[0][0]})",
            field="test_set_id",
        )


async def enqueue_chunks(
    session: AsyncSession, run: Run, positions: Sequence[int], repetitions: range
) -> None:
    """Queues the run's cases at `positions`, each `repetitions`, as chunk jobs in the
    request's transaction: workers and processes share the chunks, and the first to start
    marks the run running."""
    size = max(1, get_runtime().settings.run_chunk_size // len(repetitions))
    chunks = [list(positions[i : i + size]) for i in range(0, len(positions), size)]
    # Repetitions added to an ended run are queued under keys of their own.
    prefix = f"run:{run.id}" + (f":from:{repetitions.start}" if repetitions.start else "")
    await queue.enqueue_many(
        session,
        organization_id=run.organization_id,
        kind=CHUNK_JOB,
        jobs=[
            (
                {
                    "run_id": str(run.id),
                    "positions": chunk,
                    "chunks": len(chunks),
                    "repetitions": [repetitions.start, repetitions.stop],
                },
                f"{prefix}:chunk:{index}",
            )
            for index, chunk in enumerate(chunks)
        ],
    )


def chunk_repetitions(payload: dict[str, Any], run_repetitions: int) -> range:
    """The repetitions a chunk job's payload (`enqueue_chunks`) stands for: all the run's when
    it names none (as the chunks migration 0006 made of legacy run starts)."""
    return range(*payload.get("repetitions", (0, run_repetitions)))


async def cancel_run(session: AsyncSession, run: Run) -> Run:
    if run.status in TERMINAL:
        raise Conflict(f"The run has already ended ({run.status})")
    await gates.end_run(session, run, "cancelled")
    return await get_run_or_404(session, run.id)


# --- comparisons and baselines --------------------------------------------------------------


async def compare_runs(
    session: AsyncSession, run: Run, baseline: str, options: CompareOptions
) -> Comparison:
    """`baseline`: a run id, or `project` for the project's baseline run."""
    if run.status not in TERMINAL:
        raise Conflict(f"The run has not finished: it is {run.status}")
    if baseline == "project":
        project = await project_crud.get_project(session, run.project_id)
        if project is None or project.baseline_run_id is None:
            raise InvalidInput("the project has no baseline run", field="baseline")
        baseline_id = project.baseline_run_id
    else:
        try:
            baseline_id = uuid.UUID(baseline)
        except ValueError:
            raise InvalidInput("must be a run id or project", field="baseline") from None
    if baseline_id == run.id:
        raise InvalidInput("is this run: compare it with another", field="baseline")
    found = await crud.get_run(session, baseline_id)
    if found is None or found.project_id != run.project_id:
        raise NotFound("Baseline run not found in this run's project")
    if found.status not in TERMINAL:
        raise Conflict(f"The baseline run has not finished: it is {found.status}")
    return await compare(session, run, found, options)


async def set_baseline(
    session: AsyncSession, project_id: uuid.UUID, run_id: uuid.UUID | None
) -> tuple[Project, uuid.UUID | None]:
    """The project with its new baseline, and the baseline it had before."""
    # Held, so that of two changes at once the second records the first's baseline as
    # "before", and one made as the project is deleted finds it gone.
    project = await project_crud.get_project(session, project_id, for_update=True)
    if project is None:
        raise NotFound("Project not found")
    if run_id is not None:
        await gates.completed_baseline(session, project.id, run_id, field="run_id")
    previous = project.baseline_run_id
    project.baseline_run_id = run_id
    await project_crud.save_project(session)
    return project, previous


# --- streams and exports --------------------------------------------------------------------


def stream_token(runtime: Runtime, principal: Principal, run: Run) -> StreamToken:
    token, expires_at = issue_stream_token(
        secret=runtime.secret_key,
        run_id=run.id,
        principal=principal,
        lifetime=timedelta(minutes=runtime.settings.stream_token_minutes),
    )
    return StreamToken(
        token=token,
        expires_at=expires_at,
        events_url=f"/public/runs/{run.id}/events?token={token}",
        page_url=f"/public/runs/{run.id}?token={token}",
    )
