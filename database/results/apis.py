from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import Header, Query, Response, status
from fastapi.responses import StreamingResponse

from database.deps import DbSession, Member, Pagination, RuntimeDep, Viewer
from database.evaluations.schemas import EvaluationRead
from database.organizations.audit import RequestMetaDep, record
from database.projects.schemas import ProjectRead
from database.results import crud, export, follow_up_apis, reads, run_requests, service, summaries
from database.results.comparison import CompareOptions
from database.results.comparison_schemas import Comparison
from database.results.crud import figures
from database.results.follow_up_apis import record_gate
from database.results.reads import get_run_or_404, run_read, run_reads
from database.results.run_requests import KEY_HEADER
from database.results.schemas import (
    BaselineSet,
    CaseRepetitions,
    ResultPage,
    ResultRead,
    ResultStatus,
    RunCreate,
    RunRead,
    RunStatus,
    RunSummary,
    StreamToken,
)
from database.routing import api_router, include_flat
from utils.problems import errors
from utils.schemas import Page

router = api_router(prefix="/runs", tags=["runs"])
results_router = api_router(prefix="/results", tags=["runs"])
baseline_router = api_router(prefix="/projects", tags=["projects"])
EXPORT_TYPES = {"csv": "text/csv", "json": "application/json", "junit": "application/xml"}


@router.get(
    "",
    operation_id="runs_list",
    summary="List runs",
)
async def list_runs(
    session: DbSession,
    _: Viewer,
    page: Pagination,
    project_id: uuid.UUID | None = None,
    test_set_id: uuid.UUID | None = None,
    status_filter: Annotated[RunStatus | None, Query(alias="status")] = None,
) -> Page[RunRead]:
    """Newest first, filtered by project, test set or status, each with its counts."""
    rows, total = await crud.list_runs(
        session,
        project_id=project_id,
        test_set_id=test_set_id,
        status=status_filter,
        limit=page.limit,
        offset=page.offset,
    )
    return Page(
        items=await run_reads(session, rows),
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="runs_create",
    summary="Start a run: pins the test set's current version and queues the work",
    responses=errors(409),
)
async def create_run(
    body: RunCreate,
    session: DbSession,
    principal: Member,
    meta: RequestMetaDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=KEY_HEADER,
            min_length=1,
            max_length=200,
            pattern=r"^[!-~]+$",
            description="Sent again with the same request (a lost answer, a retried job), it"
            " gives the run made the first time rather than start another; with another"
            " request, a 422. Any printable ASCII, unique per request (a UUID, say).",
        ),
    ] = None,
) -> RunRead:
    """What runs: a test set version, a target (or recorded outputs), metrics and repetitions,
    optionally gated on a baseline."""
    run, made_before = await run_requests.start_run(session, principal, body, idempotency_key)
    if not made_before:
        await record_gate(session, principal, run, meta)
    return (await run_reads(session, [run]))[0]


@router.get(
    "/{run_id}",
    operation_id="runs_read",
    summary="Read a run",
)
async def read_run(run_id: uuid.UUID, session: DbSession, _: Viewer) -> RunRead:
    """Its status, counts, cost, gate result and what it ran."""
    return await run_read(session, run_id)


@router.post(
    "/{run_id}/cancel",
    operation_id="runs_cancel",
    summary="Stop a queued or running run (within seconds)",
    responses=errors(409),
)
async def cancel_run(run_id: uuid.UUID, session: DbSession, _: Member) -> RunRead:
    """Results already recorded stay; the run ends `cancelled`."""
    run = await get_run_or_404(session, run_id, for_update=True)
    await service.cancel_run(session, run)
    return await run_read(session, run_id)


include_flat(router, follow_up_apis.router)  # in their place among the runs operations


@router.get(
    "/{run_id}/compare",
    operation_id="runs_compare",
    summary="Is this run better, worse or no different from a baseline? Paired statistics",
    responses=errors(409),
)
async def compare_runs(
    run_id: uuid.UUID,
    session: DbSession,
    _: Viewer,
    baseline: Annotated[str, Query(description="A run id, or project for the project's baseline")],
    include_changed: Annotated[
        bool, Query(description="Pair tests whose content changed between the versions")
    ] = False,
    min_effect: Annotated[
        float,
        Query(ge=0, le=1, allow_inf_nan=False, description="Changes inside ± this are equivalent"),
    ] = 0.02,
    flips_limit: Annotated[int, Query(ge=0, le=100)] = 20,
    flips_offset: Annotated[int, Query(ge=0)] = 0,
) -> Comparison:
    """Per metric, overall and per slice: pass rates, paired bootstrap interval, McNemar / Wilcoxon
    with Holm's correction, a verdict and its reason."""
    run = await get_run_or_404(session, run_id)
    options = CompareOptions(
        include_changed=include_changed,
        min_effect=min_effect,
        flips_limit=flips_limit,
        flips_offset=flips_offset,
    )
    return await service.compare_runs(session, run, baseline, options)


@router.get(
    "/{run_id}/cases",
    operation_id="runs_list_cases",
    summary="Per case: repetitions, passes, pass@k, pass^k and whether it is flaky",
)
async def list_case_repetitions(
    run_id: uuid.UUID,
    session: DbSession,
    _: Viewer,
    page: Pagination,
    flaky: Annotated[bool | None, Query(description="Only flaky (or only steady) cases")] = None,
) -> Page[CaseRepetitions]:
    """One row per case, paginated."""
    run = await get_run_or_404(session, run_id)
    tallies, total = await figures.case_page(
        session, run, flaky=flaky, limit=page.limit, offset=page.offset
    )
    return Page(
        items=[summaries.case_repetitions(t) for t in tallies],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get(
    "/{run_id}/results",
    operation_id="runs_list_results",
    summary="List a run's results",
    responses=errors(422),
)
async def list_results(
    run_id: uuid.UUID,
    session: DbSession,
    _: Viewer,
    page: Pagination,
    status_filter: Annotated[ResultStatus | None, Query(alias="status")] = None,
    cursor: Annotated[
        str | None,
        Query(
            max_length=200,
            description="`next_cursor` of the previous page (instead of `offset`: the same"
            " cost at any depth)",
            examples=["MTIzNHwwfHwwMTk1ZjNhMmM0ZDE"],
        ),
    ] = None,
) -> ResultPage:
    """One per case and repetition: output, latency, tokens, cost, error; filter by status.
    Follow `next_cursor` to walk a large run."""
    return await reads.result_page(
        session,
        run_id,
        status=status_filter,
        limit=page.limit,
        offset=page.offset,
        cursor=cursor,
    )


@router.post(
    "/{run_id}/stream-token",
    operation_id="runs_create_stream_token",
    summary="A short-lived token for this run's live stream and page (as ?token=)",
)
async def stream_token(
    run_id: uuid.UUID, session: DbSession, principal: Viewer, runtime: RuntimeDep
) -> StreamToken:
    """Also returns the URLs of the event stream and of the live page."""
    run = await get_run_or_404(session, run_id)
    return service.stream_token(runtime, principal, run)


@router.get(
    "/{run_id}/summary",
    operation_id="runs_summary",
    summary="A run's summary",
)
async def run_summary(run_id: uuid.UUID, session: DbSession, _: Viewer) -> RunSummary:
    """Pass rates overall, per metric and per behavior, category and topic; latency percentiles,
    tokens, cost, errors, pass@k and the gate."""
    return await summaries.summary(session, await get_run_or_404(session, run_id))


@router.get(
    "/{run_id}/export",
    response_class=Response,
    responses={200: {"content": {media: {} for media in EXPORT_TYPES.values()}}},
    operation_id="runs_export",
    summary="Results as CSV, JSON or JUnit XML (for CI systems)",
)
async def export_run(
    run_id: uuid.UUID,
    session: DbSession,
    principal: Viewer,
    format: Literal["csv", "json", "junit"] = "json",
) -> Response:
    """JUnit test names are stable across runs (test set name, test id, repetition)."""
    run = await get_run_or_404(session, run_id)
    extension = "xml" if format == "junit" else format
    return StreamingResponse(
        await export.export_run(session, principal, run, format),
        media_type=EXPORT_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="run-{run.id}.{extension}"'},
    )


@results_router.get(
    "/{result_id}",
    operation_id="results_read",
    summary="Read a result",
)
async def read_result(result_id: uuid.UUID, session: DbSession, _: Viewer) -> ResultRead:
    """One case's output, latency, tokens, cost, error and pass/fail."""
    return await reads.read_result(session, result_id)


@results_router.get(
    "/{result_id}/evaluations",
    operation_id="results_list_evaluations",
    summary="A result's evaluations",
)
async def read_evaluations(
    result_id: uuid.UUID, session: DbSession, _: Viewer
) -> list[EvaluationRead]:
    """Each metric's score, pass/fail and reason (judges explain themselves)."""
    return (await reads.read_result(session, result_id)).evaluations


@baseline_router.put(
    "/{project_id}/baseline",
    operation_id="projects_set_baseline",
    summary="Set (or clear) the run that candidates are compared with by default",
    responses=errors(409),
)
async def set_baseline(
    project_id: uuid.UUID,
    body: BaselineSet,
    session: DbSession,
    principal: Member,
    meta: RequestMetaDep,
) -> ProjectRead:
    """The run must be a completed run of the project; `null` clears it."""
    project, previous = await service.set_baseline(session, project_id, body.run_id)
    if previous != project.baseline_run_id:
        await record(
            session,
            principal,
            action="project.baseline_changed",
            target_type="project",
            target_id=project.id,
            details={"from": previous, "to": project.baseline_run_id},
            request_meta=meta,
        )
    return ProjectRead.model_validate(project)
