"""Work on a run that has ended: rerun its failed cases (a new run), give it more repetitions
(the same run, reopened), or rescore its outputs with other metrics (a new run that calls no
target)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.projects import crud as project_crud
from database.results import crud, gates, model_pins
from database.results.crud import baselines, figures, rescore_sources
from database.results.models import CHUNK_JOB, TERMINAL, Run
from database.results.schemas import (
    MAX_REPETITIONS,
    RepeatCreate,
    RerunCreate,
    RescoreCreate,
    ResumeCreate,
)
from database.results.service import (
    check_concurrency,
    chunk_repetitions,
    enqueue_chunks,
    frozen_metrics,
)
from tasks import queue
from utils.auth import Principal
from utils.errors import Conflict, InvalidInput


def _ended(run: Run, action: str) -> None:
    if run.status not in TERMINAL:
        raise Conflict(f"The run is {run.status}: {action} it once it has ended")


def _calls_again(run: Run, action: str, *, target: bool = True) -> None:
    """What the run calls its target with (`target`: and the target) is still there: else
    every chunk would fail, or a rescore record its inputs without their prompt."""
    calls_target = run.outputs_from_run_id is None and run.recorded_field is None
    if target and calls_target and run.target_model_id is None:
        raise Conflict(f"The run's target model configuration was deleted: it cannot {action}")
    if run.prompted and run.prompt_version_id is None:
        raise Conflict(f"The run's prompt was deleted: it cannot {action}")


async def _same_models(session: AsyncSession, run: Run, action: str) -> None:
    """The run's models are as it was made: more of it would mix two models' answers."""
    if (why := await model_pins.changed_now(session, run)) is not None:
        raise Conflict(f"The run cannot {action}: {why}")


async def _create_child(session: AsyncSession, child: Run) -> Run:
    await model_pins.pin(session, child)  # a new run: its models as they are now
    return await crud.create_run(session, child)


def _child(principal: Principal, parent: Run, positions: list[int], **own: Any) -> Run:
    """A new run of some of `parent`'s cases, on the same version, target and prompt."""
    return Run(
        organization_id=principal.organization_id,
        project_id=parent.project_id,
        test_set_id=parent.test_set_id,
        test_set_version_id=parent.test_set_version_id,
        target_model_id=parent.target_model_id,
        prompt_version_id=parent.prompt_version_id,
        prompted=parent.prompted,
        parent_run_id=parent.id,
        case_positions=positions,
        repetitions=parent.repetitions,
        timeout_seconds=parent.timeout_seconds,
        max_steps=parent.max_steps,
        simulator_model_id=parent.simulator_model_id,
        use_cache=False,
        status="queued",
        **own,
    )


def _budget_for_more(run: Run, more: float | None, ask: str) -> float | None:
    """The budget of a run given more work (repeated or resumed): `more` on top of what it has
    spent, else what is left of its own budget; none left, `ask` says to send a max_cost."""
    if more is not None:
        return run.spent + more
    if run.max_cost is not None and run.spent >= run.max_cost:
        raise Conflict(f"The run's budget is spent: {ask}")
    return run.max_cost


async def rerun(
    session: AsyncSession, principal: Principal, run: Run, body: RerunCreate | None = None
) -> Run:
    """A new run of the failed and errored cases. Its budget is `max_cost`, else one the size
    of this run's (a fresh budget: the new run has spent nothing; none if this run had none)."""
    _ended(run, "rerun")
    _calls_again(run, "be rerun")
    positions = await crud.positions_to_rerun(session, run.id)
    if not positions:
        raise Conflict("Nothing to rerun: no case failed or errored")
    # A rescore's rerun scores the same stored outputs again: those its source has now, of
    # the rescore's repetitions (the source may have been given more since, which the
    # rerun's chunks never do).
    source = run.outputs_from_run_id
    made: dict[str, Any] = {}
    total = len(positions) * run.repetitions
    if source is not None:
        made, keys = await _source_now(
            session, source, positions, range(run.repetitions), "rerun a rescore of"
        )
        total = len(keys)
    child = await _create_child(
        session,
        _child(
            principal,
            run,
            positions,
            outputs_from_run_id=source,
            recorded_field=run.recorded_field,
            name=f"{run.name or 'run'} (rerun)",
            metrics=run.metrics,
            concurrency=run.concurrency,
            max_cost=run.max_cost if body is None or body.max_cost is None else body.max_cost,
            total=total,
            **made,
        ),
    )
    await enqueue_chunks(session, child, positions, range(run.repetitions))
    return child


async def repeat(session: AsyncSession, run: Run, body: RepeatCreate) -> Run:
    """More repetitions of some of a completed run's cases: the run reopens, and its summary,
    gate and comparisons count them once they are in."""
    _ended(run, "repeat")
    _calls_again(run, "be repeated")
    await _same_models(session, run, "be repeated")
    if run.status != "completed":
        raise Conflict(f"Only a completed run can be given more repetitions: this one {run.status}")
    if run.outputs_from_run_id is not None:
        raise Conflict("A rescore reuses another run's outputs: repeat that run instead")
    # A baseline reopened would be no baseline for its gates (refused, or left undecided)
    # until it completed again, and its figures would move under decisions made against it.
    if leaning := await baselines.leaning_on(session, run):
        raise Conflict(f"The run is {leaning}: set another baseline first, or start a new run")
    tallies = await figures.case_tallies(session, run.id)
    if body.cases == "flaky":
        chosen = [t for t in tallies if 0 < t.passed < t.scored]
    elif body.cases == "undecided":
        chosen = [t for t in tallies if 0 < t.passed < t.scored or t.errored or not t.scored]
    else:
        chosen = tallies
    if not chosen:
        raise Conflict(f"Nothing to repeat: the run has no {body.cases} case")
    added = range(run.repetitions, run.repetitions + body.repetitions)
    if added.stop > MAX_REPETITIONS:
        raise InvalidInput(
            f"a run has at most {MAX_REPETITIONS} repetitions of a case; this one has "
            f"{run.repetitions}",
            field="repetitions",
        )
    budget = _budget_for_more(run, body.max_cost, "give the repetitions a max_cost of their own")
    await crud.reopen(
        session,
        run.id,
        repetitions=added.stop,
        total=run.total + len(chosen) * body.repetitions,
        max_cost=budget,
    )
    run = await crud.get_run(session, run.id)  # type: ignore[assignment]
    await enqueue_chunks(session, run, [t.position for t in chosen], added)
    return run


async def rescore(
    session: AsyncSession, principal: Principal, run: Run, body: RescoreCreate
) -> Run:
    """A new run, linked to this one, scoring its stored outputs with `metric_ids`: the target
    is not called; judges are."""
    _ended(run, "rescore")
    _calls_again(run, "be rescored", target=False)
    positions = await crud.result_positions(session, run.id)
    if not positions:
        raise Conflict("Nothing to rescore: the run has no result")
    project = await project_crud.get_project(session, run.project_id)
    assert project is not None
    metrics = await frozen_metrics(
        session, body.metric_ids, project_id=project.id, judge=project.default_judge_model_id
    )
    gate = await gates.prepare(session, project, body.gate, metrics) if body.gate else None
    concurrency = check_concurrency(body.concurrency or run.concurrency)
    made, keys = await _source_now(session, run.id, positions, range(run.repetitions), "rescore")
    child = await _create_child(
        session,
        _child(
            principal,
            run,
            positions,
            outputs_from_run_id=run.id,
            name=body.name or f"{run.name or 'run'} (rescored)",
            metrics=metrics,
            concurrency=concurrency,
            gate=gate,
            max_cost=body.max_cost,
            total=len(keys),
            **made,
        ),
    )
    await enqueue_chunks(session, child, positions, range(run.repetitions))
    return child


async def _source_now(
    session: AsyncSession,
    source_id: uuid.UUID,
    positions: list[int],
    repetitions: range,
    action: str,
) -> tuple[dict[str, Any], dict[tuple[int, int], int]]:
    """The results of an ended run that a rescore (or its rerun) made now scores, read as its
    chunks will read them (rescore_sources.source_sizes, written by the moment the source was
    held still), and that moment as the new run's `created_at`, which the chunks read them by:
    its total and its chunks count the same results, whatever is written to the source later."""
    held = await rescore_sources.hold_source(session, source_id)
    if held is None:
        raise Conflict("The run whose outputs are rescored has been deleted")
    source, moment = held
    _ended(source, action)
    keys = await rescore_sources.source_sizes(
        session, source_id, positions, repetitions, written_by=moment
    )
    return {"created_at": moment}, keys


async def resume(session: AsyncSession, run: Run, body: ResumeCreate | None = None) -> Run:
    """A run that ended before completing (failed, cancelled, or stopped by its budget) goes
    on: its chunks are queued again and do only the cases that have no result yet; what it
    wrote stays. (`rerun` is the other thing: failed and errored cases again, as a new run.)
    Its budget is as a repeat's: `max_cost` more than it has spent, else what is left of its
    own; a run stopped by its budget has none left, so it resumes only with a `max_cost`."""
    _ended(run, "resume")
    _calls_again(run, "be resumed")
    await _same_models(session, run, "be resumed")
    if run.status == "completed":
        raise Conflict("The run has completed: nothing to resume (rerun repeats failed cases)")
    budget = _budget_for_more(
        run, body.max_cost if body else None, "send a max_cost to resume it with more"
    )
    planned = await queue.payloads(session, CHUNK_JOB, f"run:{run.id}:")
    if any(status in ("queued", "running") for status, _ in planned):
        raise Conflict("The run's work is still stopping: resume it in a few seconds")
    chunks = list(
        {_chunk_key(payload, run.repetitions): payload for _, payload in planned}.values()
    )
    if not chunks:
        raise Conflict("Nothing to resume: the run has no planned work")
    await crud.reopen(
        session, run.id, repetitions=run.repetitions, total=run.total, max_cost=budget
    )
    resumption = uuid.uuid4().hex[:12]
    await queue.enqueue_many(
        session,
        organization_id=run.organization_id,
        kind=CHUNK_JOB,
        jobs=[
            (payload, f"run:{run.id}:resume:{resumption}:chunk:{index}")
            for index, payload in enumerate(chunks)
        ],
    )
    return await crud.get_run(session, run.id)  # type: ignore[return-value]


def _chunk_key(payload: dict[str, Any], run_repetitions: int) -> tuple[tuple[int, ...], range]:
    return tuple(payload["positions"]), chunk_repetitions(payload, run_repetitions)
