from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status

from database.deps import DbSession, Member, Pagination, RuntimeDep, Viewer
from database.evaluations.schemas import EvaluationRead
from database.results import crud, service
from database.results.schemas import (
    ResultRead,
    ResultStatus,
    RunCreate,
    RunRead,
    RunStatus,
    RunSummary,
    StreamToken,
)
from utils.schemas import Page

router = APIRouter(prefix="/runs", tags=["runs"])
results_router = APIRouter(prefix="/results", tags=["runs"])
EXPORT_TYPES = {"csv": "text/csv", "json": "application/json", "junit": "application/xml"}


async def _read(session: DbSession, run_id: uuid.UUID) -> RunRead:
    run = await service.get_run_or_404(session, run_id)
    return (await service.to_reads(session, [run]))[0]


@router.get("")
async def list_runs(
    session: DbSession,
    _: Viewer,
    page: Pagination,
    project_id: uuid.UUID | None = None,
    test_set_id: uuid.UUID | None = None,
    status_filter: Annotated[RunStatus | None, Query(alias="status")] = None,
) -> Page[RunRead]:
    rows, total = await crud.list_runs(
        session,
        project_id=project_id,
        test_set_id=test_set_id,
        status=status_filter,
        limit=page.limit,
        offset=page.offset,
    )
    return Page(
        items=await service.to_reads(session, rows),
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a run: pins the test set's current version and queues the work",
)
async def create_run(
    body: RunCreate, session: DbSession, runtime: RuntimeDep, principal: Member
) -> RunRead:
    run = await service.create_run(session, runtime, principal, body)
    return (await service.to_reads(session, [run]))[0]


@router.get("/{run_id}")
async def read_run(run_id: uuid.UUID, session: DbSession, _: Viewer) -> RunRead:
    return await _read(session, run_id)


@router.post("/{run_id}/cancel", summary="Stop a queued or running run (within seconds)")
async def cancel_run(run_id: uuid.UUID, session: DbSession, _: Member) -> RunRead:
    run = await service.get_run_or_404(session, run_id, for_update=True)
    await service.cancel_run(session, run)
    return await _read(session, run_id)


@router.post(
    "/{run_id}/rerun",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Run the failed and errored cases again, as a new run linked to this one",
)
async def rerun(run_id: uuid.UUID, session: DbSession, principal: Member) -> RunRead:
    run = await service.get_run_or_404(session, run_id)
    child = await service.rerun(session, principal, run)
    return (await service.to_reads(session, [child]))[0]


@router.get("/{run_id}/results")
async def list_results(
    run_id: uuid.UUID,
    session: DbSession,
    _: Viewer,
    page: Pagination,
    status_filter: Annotated[ResultStatus | None, Query(alias="status")] = None,
) -> Page[ResultRead]:
    run = await service.get_run_or_404(session, run_id)
    rows, total = await crud.list_results(
        session, run.id, status=status_filter, limit=page.limit, offset=page.offset
    )
    return Page(
        items=await service.result_reads(session, rows),
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post(
    "/{run_id}/stream-token",
    summary="A short-lived token for this run's live stream and page (as ?token=)",
)
async def stream_token(
    run_id: uuid.UUID, session: DbSession, principal: Viewer, runtime: RuntimeDep
) -> StreamToken:
    run = await service.get_run_or_404(session, run_id)
    return service.stream_token(runtime, principal, run)


@router.get("/{run_id}/summary")
async def run_summary(run_id: uuid.UUID, session: DbSession, _: Viewer) -> RunSummary:
    return await service.summary(session, await service.get_run_or_404(session, run_id))


@router.get(
    "/{run_id}/export",
    response_class=Response,
    responses={200: {"content": {media: {} for media in EXPORT_TYPES.values()}}},
    summary="Results as CSV, JSON or JUnit XML (for CI systems)",
)
async def export_run(
    run_id: uuid.UUID,
    session: DbSession,
    _: Viewer,
    format: Literal["csv", "json", "junit"] = "json",
) -> Response:
    run = await service.get_run_or_404(session, run_id)
    extension = "xml" if format == "junit" else format
    return Response(
        await service.export_run(session, run, format),
        media_type=EXPORT_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="run-{run.id}.{extension}"'},
    )


@results_router.get("/{result_id}")
async def read_result(result_id: uuid.UUID, session: DbSession, _: Viewer) -> ResultRead:
    return await service.read_result(session, result_id)


@results_router.get("/{result_id}/evaluations")
async def read_evaluations(
    result_id: uuid.UUID, session: DbSession, _: Viewer
) -> list[EvaluationRead]:
    return (await service.read_result(session, result_id)).evaluations
