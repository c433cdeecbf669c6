from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query, status

from database.deps import DbSession, Member, Pagination, Viewer
from database.evaluations import crud, service
from database.evaluations.imports import ImportFormat, parse_import, write_import
from database.evaluations.schemas import MetricCreate, MetricRead, MetricUpdate, TestSetMetrics
from database.evaluations.uploads import IMPORT_BODY, ReceivedUpload
from database.organizations.audit import RequestMetaDep, record_deletion
from database.routing import api_router
from database.test_sets.schemas import ImportResult
from database.test_sets.service import ImportMode, get_test_set_or_404
from utils.errors import InvalidInput
from utils.problems import errors, placed
from utils.save_checks import schemas_checked_by_handler
from utils.schemas import Page

router = api_router(prefix="/metrics", tags=["metrics"])
test_set_router = api_router(prefix="/test-sets", tags=["metrics"])
# Importing tests into a set is documented with the test sets (its logic is here: it may
# create metrics, which test_sets sits below).
import_router = api_router(prefix="/test-sets", tags=["test sets"])


@router.get(
    "",
    operation_id="metrics_list",
    summary="Metric definitions (evaluators)",
)
async def list_metrics(
    session: DbSession, _: Viewer, page: Pagination, project_id: uuid.UUID | None = None
) -> Page[MetricRead]:
    """The project's metrics, each with its type, parameters, threshold and operator."""
    rows, total = await crud.list_metrics(
        session, project_id=project_id, limit=page.limit, offset=page.offset
    )
    items = [service.to_read(row) for row in rows]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="metrics_create",
    dependencies=[Depends(schemas_checked_by_handler)],
    summary="Create a metric",
    responses=errors(409),
)
async def create_metric(body: MetricCreate, session: DbSession, principal: Member) -> MetricRead:
    """`parameters` depend on `type`: each type's schema says which it takes."""
    return service.to_read(await service.create_metric(session, principal, body))


@router.get(
    "/{metric_id}",
    operation_id="metrics_read",
    summary="Read a metric",
)
async def read_metric(metric_id: uuid.UUID, session: DbSession, _: Viewer) -> MetricRead:
    """Its type, parameters, threshold, operator, negation, weight and judge."""
    return service.to_read(await service.get_metric_or_404(session, metric_id))


@router.patch(
    "/{metric_id}",
    operation_id="metrics_update",
    dependencies=[Depends(schemas_checked_by_handler)],
    summary="Edit a metric (runs already started keep their copy)",
    responses=errors(409),
)
async def update_metric(
    metric_id: uuid.UUID, body: MetricUpdate, session: DbSession, _: Member
) -> MetricRead:
    """Fields left out stay as they are; `parameters` are checked against the metric's type."""
    metric = await service.get_metric_or_404(session, metric_id)
    return service.to_read(await service.update_metric(session, metric, body))


@router.delete(
    "/{metric_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="metrics_delete",
    summary="Delete a metric",
)
async def delete_metric(
    metric_id: uuid.UUID, session: DbSession, principal: Member, meta: RequestMetaDep
) -> None:
    """Runs that used it keep their copy and their scores."""
    metric = await service.get_metric_or_404(session, metric_id)
    await crud.delete_metric(session, metric)
    await record_deletion(
        session,
        principal,
        meta,
        "metric",
        metric.id,
        name=metric.name,
        type=metric.type,
        project_id=metric.project_id,
    )


@test_set_router.get(
    "/{test_set_id}/metrics",
    operation_id="test_sets_read_metrics",
    summary="A test set's default metrics",
)
async def read_test_set_metrics(
    test_set_id: uuid.UUID, session: DbSession, _: Viewer
) -> list[MetricRead]:
    """The metrics a run of this set uses when it names none."""
    test_set = await get_test_set_or_404(session, test_set_id)
    metrics = await crud.get_metrics(session, await crud.test_set_metric_ids(session, test_set.id))
    return [service.to_read(metric) for metric in metrics]


@test_set_router.put(
    "/{test_set_id}/metrics",
    operation_id="test_sets_set_metrics",
    summary="Set a test set's default metrics",
)
async def replace_test_set_metrics(
    test_set_id: uuid.UUID, body: TestSetMetrics, session: DbSession, _: Member
) -> list[MetricRead]:
    """Replaces the list; metrics must belong to the set's project."""
    # Held: another replacement (or an import adding metrics) waits, then reads this one's.
    test_set = await get_test_set_or_404(session, test_set_id, for_update=True)
    metrics = await service.set_test_set_metrics(session, test_set, body.metric_ids)
    return [service.to_read(metric) for metric in metrics]


@import_router.post(
    "/{test_set_id}/import",
    status_code=status.HTTP_201_CREATED,
    description="CSV, JSON and JSONL columns map by name (`input`/`prompt`/`question`,"
    " `expected_output`/`expected`/`answer`, `context`, `behavior`, `category`, `topic`,"
    " `tags`; any other column goes to `metadata`). Foreign formats, named by `format`:"
    " `promptfoo` (a promptfooconfig.yaml: `tests` with `vars` and `assert`, and the files"
    " its `tests` refer to as attachments), `openai-evals` (JSONL samples with `input` and"
    " `ideal`) and `langfuse` (dataset items with `input`, `expected_output`, `metadata`)."
    " A foreign file's assertions become metrics taking each test's parameters, added to"
    " the set's default metrics; those without an Assay equivalent are listed in `unmapped`."
    " `mode=sync` makes the set hold exactly the file's cases (a file of no cases, such as"
    " an empty set's CSV or JSON export, empties it; an empty file is refused): an unchanged"
    " file writes nothing (and so makes no new version), and unchanged cases keep their"
    " tests. A file with any bad row imports nothing and answers 422 listing every bad row"
    " by line, field and reason.",
    openapi_extra=IMPORT_BODY,
    operation_id="test_sets_import",
    summary="Import tests from a file (CSV, JSON, JSONL, promptfoo, OpenAI Evals, Langfuse)",
    responses={
        **errors(413, 415),
        400: {"description": "A multipart body that cannot be read (no boundary, too many parts)"},
        409: {
            "description": "A foreign file's assertion needs a metric, and its name and every"
            " variant of it (`(imported)`, `(imported 2)`, ...) are other metrics'"
        },
    },
)
async def import_tests(
    test_set_id: uuid.UUID,
    upload: ReceivedUpload,
    session: DbSession,
    principal: Member,
    format: Annotated[
        ImportFormat | None,
        Query(description="Else from the content type or file name (csv, json, jsonl)"),
    ] = None,
    mode: Annotated[
        ImportMode, Query(description="append: add the cases; sync: hold exactly them")
    ] = "append",
) -> ImportResult:
    test_set = await get_test_set_or_404(session, test_set_id)
    try:
        parsed = await parse_import(session, test_set, upload, fmt=format, mode=mode)
        # Locked only now, for the writes, as it then stands (another import may have ended).
        test_set = await get_test_set_or_404(session, test_set_id, for_update=True)
        return await write_import(session, principal, test_set, parsed, mode=mode)
    except InvalidInput as exc:
        # Every parser's errors as the Problem schema has them: a `field` (`line 3: input`)
        # for each, where a parser gives only the line.
        exc.errors = [placed(error) for error in exc.errors] if exc.errors else None
        raise
