"""The operations on an ended run that make more of it: rerun its failed cases, give it more
repetitions, rescore its outputs, resume it (see follow_ups). Their routes are the runs
router's (database.results.apis adds them to it, in their place)."""

from __future__ import annotations

import uuid

from fastapi import status
from sqlalchemy.ext.asyncio import AsyncSession

from database.deps import DbSession, Member
from database.organizations.audit import RequestMeta, RequestMetaDep, record
from database.results import follow_ups
from database.results.models import Run
from database.results.reads import get_run_or_404, run_reads
from database.results.schemas import (
    RepeatCreate,
    RerunCreate,
    RescoreCreate,
    ResumeCreate,
    RunRead,
)
from database.routing import api_router
from utils.auth import Principal
from utils.problems import errors

router = api_router()  # no prefix, no tags: the runs router's are given to its routes


async def record_gate(
    session: AsyncSession, principal: Principal, run: Run, meta: RequestMeta
) -> None:
    """A run's gate is set when the run is made (and never changed): recorded then."""
    if run.gate is not None:
        await record(
            session,
            principal,
            action="run.gate_set",
            target_type="run",
            target_id=run.id,
            details={"project_id": run.project_id, "gate": run.gate},
            request_meta=meta,
        )


@router.post(
    "/{run_id}/rerun",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="runs_rerun",
    summary="Run the failed and errored cases again, as a new run linked to this one",
    responses=errors(409),
)
async def rerun(
    run_id: uuid.UUID,
    session: DbSession,
    principal: Member,
    meta: RequestMetaDep,
    body: RerunCreate | None = None,
) -> RunRead:
    """Same version, target and metrics; only the cases that did not pass. The new run's
    budget is `max_cost`, else a fresh one the size of this run's `max_cost`."""
    run = await get_run_or_404(session, run_id)
    child = await follow_ups.rerun(session, principal, run, body)
    await record(
        session,
        principal,
        action="run.rerun",
        target_type="run",
        target_id=run.id,
        details={
            "project_id": run.project_id,
            "rerun_run_id": child.id,
            **_budget_details(body.max_cost if body else None, child),
        },
        request_meta=meta,
    )
    return (await run_reads(session, [child]))[0]


@router.post(
    "/{run_id}/repeat",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="runs_repeat",
    summary="More repetitions of a completed run's cases (all, flaky or undecided ones)",
    responses=errors(409),
)
async def repeat_run(
    run_id: uuid.UUID,
    session: DbSession,
    principal: Member,
    meta: RequestMetaDep,
    body: RepeatCreate | None = None,
) -> RunRead:
    """The run reopens; its summary, gate and comparisons take the new repetitions in. A
    gate decided before is decided again, and the audit log keeps the verdict it replaces.
    No body: one more repetition of the undecided cases."""
    body = body or RepeatCreate()
    run = await get_run_or_404(session, run_id, for_update=True)
    replaced = run.gate_result and {k: run.gate_result.get(k) for k in ("status", "reasons")}
    run = await follow_ups.repeat(session, run, body)
    await record(
        session,
        principal,
        action="run.repeated",
        target_type="run",
        target_id=run.id,
        details={
            "project_id": run.project_id,
            **body.model_dump(mode="json"),
            "replaced_gate_result": replaced,
        },
        request_meta=meta,
    )
    return (await run_reads(session, [run]))[0]


@router.post(
    "/{run_id}/rescore",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="runs_rescore",
    summary="Score this run's stored outputs with other metrics: a new run, no target calls",
    responses=errors(409),
)
async def rescore_run(
    run_id: uuid.UUID,
    body: RescoreCreate,
    session: DbSession,
    principal: Member,
    meta: RequestMetaDep,
) -> RunRead:
    """Judges are called; the target is not."""
    run = await get_run_or_404(session, run_id)
    child = await follow_ups.rescore(session, principal, run, body)
    await record_gate(session, principal, child, meta)
    return (await run_reads(session, [child]))[0]


@router.post(
    "/{run_id}/resume",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="runs_resume",
    summary="Continue a run that ended before completing, with the cases that have no result",
    responses=errors(409),
)
async def resume_run(
    run_id: uuid.UUID,
    session: DbSession,
    principal: Member,
    meta: RequestMetaDep,
    body: ResumeCreate | None = None,
) -> RunRead:
    """For a failed, cancelled or stopped run: the same run goes on; what it wrote stays. A
    run whose budget is spent (stopped by it) resumes with a `max_cost`: that much more than
    it has spent."""
    run = await get_run_or_404(session, run_id, for_update=True)
    ended_as = run.status
    run = await follow_ups.resume(session, run, body)
    await record(
        session,
        principal,
        action="run.resumed",
        target_type="run",
        target_id=run.id,
        details={
            "project_id": run.project_id,
            "ended_as": ended_as,
            **_budget_details(body.max_cost if body else None, run),
        },
        request_meta=meta,
    )
    return (await run_reads(session, [run]))[0]


def _budget_details(given: float | None, run: Run) -> dict[str, float | None]:
    """A budget a follow-up was asked for (`max_cost`, none if not given) and the budget the run
    doing the work has as a result (`budget`: none is no bound)."""
    return {"max_cost": given, "budget": run.max_cost}
