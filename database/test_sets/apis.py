from __future__ import annotations

import re
import uuid
from typing import Annotated, Literal

from fastapi import Depends, Path, Query, Response, status
from fastapi.responses import StreamingResponse

from database.deps import DbSession, Member, Pagination, Viewer
from database.organizations.audit import RequestMetaDep, record_deletion
from database.routing import api_router
from database.test_sets import crud, service
from database.test_sets.crud import version_cases
from database.test_sets.schemas import (
    MembersAdd,
    MembersChanged,
    MembersReplace,
    TestSetCreate,
    TestSetRead,
    TestSetUpdate,
    VersionCaseRead,
    VersionCreate,
    VersionRead,
)
from database.tests.agent_fields import expected_schemas
from database.tests.schemas import BulkCreated, TestBulkCreate
from utils.problems import errors
from utils.save_checks import check_schemas, schemas_checked_by_handler
from utils.schemas import MAX_INT4, Page

router = api_router(prefix="/test-sets", tags=["test sets"])
# Creating tests in bulk may add them to a set: the route is under /tests, its logic is here.
tests_router = api_router(prefix="/tests", tags=["tests"])
# Version numbers are int4 columns: a larger number would fail in the driver (a 500), not 404.
VersionNumber = Annotated[int, Path(ge=1, le=MAX_INT4)]

EXPORT_TYPES = {"csv": "text/csv", "json": "application/json", "jsonl": "application/x-ndjson"}


async def _one(session: DbSession, test_set_id: uuid.UUID) -> TestSetRead:
    return (
        await service.to_reads(session, [await service.get_test_set_or_404(session, test_set_id)])
    )[0]


@router.get(
    "",
    operation_id="test_sets_list",
    summary="List test sets",
)
async def list_test_sets(
    session: DbSession, _: Viewer, page: Pagination, project_id: uuid.UUID | None = None
) -> Page[TestSetRead]:
    """The organization's test sets with their test counts and latest version, paginated."""
    rows, total = await crud.list_test_sets(
        session, project_id=project_id, limit=page.limit, offset=page.offset
    )
    items = await service.to_reads(session, rows)
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="test_sets_create",
    summary="Create a test set",
    responses=errors(409),
)
async def create_test_set(
    body: TestSetCreate, session: DbSession, principal: Member
) -> TestSetRead:
    """An ordered list of tests of one project; names are unique in the project."""
    test_set = await service.create_test_set(session, principal, body)
    return (await service.to_reads(session, [test_set]))[0]


@router.get(
    "/{test_set_id}",
    operation_id="test_sets_read",
    summary="Read a test set",
)
async def read_test_set(test_set_id: uuid.UUID, session: DbSession, _: Viewer) -> TestSetRead:
    """Its name, description, test count and latest published version."""
    return await _one(session, test_set_id)


@router.patch(
    "/{test_set_id}",
    operation_id="test_sets_update",
    summary="Update a test set",
    responses=errors(409),
)
async def update_test_set(
    test_set_id: uuid.UUID, body: TestSetUpdate, session: DbSession, _: Member
) -> TestSetRead:
    """Change its name or description; fields left out stay as they are."""
    test_set = await service.get_test_set_or_404(session, test_set_id)
    await service.update_test_set(session, test_set, body)
    return await _one(session, test_set_id)


@router.delete(
    "/{test_set_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="test_sets_delete",
    summary="Delete a test set",
)
async def delete_test_set(
    test_set_id: uuid.UUID, session: DbSession, principal: Member, meta: RequestMetaDep
) -> None:
    """Its tests stay in the project; runs of it are deleted with it."""
    test_set = await service.get_test_set_or_404(session, test_set_id)
    await crud.delete_test_set(session, test_set)
    await record_deletion(
        session,
        principal,
        meta,
        "test_set",
        test_set.id,
        name=test_set.name,
        project_id=test_set.project_id,
    )


@tests_router.post(
    "/bulk",
    status_code=status.HTTP_201_CREATED,
    operation_id="tests_create_bulk",
    dependencies=[Depends(schemas_checked_by_handler)],
    summary="Create up to 1,000 tests in one transaction (all or nothing)",
)
async def create_tests_bulk(
    body: TestBulkCreate, session: DbSession, principal: Member
) -> BulkCreated:
    """Optionally appends them to a test set; any invalid test creates none and is named in
    `errors`."""
    schemas = [
        (f"tests.{index}.{field}", schema)
        for index, test in enumerate(body.tests)
        for field, schema in expected_schemas(test.expected_tool_calls)
    ]
    await check_schemas(schemas, field="tests")
    ids = await service.create_tests_bulk(session, principal, body)
    return BulkCreated(created=len(ids), ids=ids)


# --- membership -----------------------------------------------------------------------------


@router.post(
    "/{test_set_id}/tests",
    operation_id="test_sets_add_tests",
    summary="Append tests (already present ones are skipped)",
)
async def add_tests(
    test_set_id: uuid.UUID, body: MembersAdd, session: DbSession, _: Member
) -> MembersChanged:
    """Tests must belong to the set's project; the order is the order sent."""
    test_set = await service.get_test_set_or_404(session, test_set_id, for_update=True)
    added = await service.append_members(session, test_set, body.test_ids)
    return MembersChanged(test_count=await crud.count_members(session, test_set.id), added=added)


@router.put(
    "/{test_set_id}/tests",
    operation_id="test_sets_replace_tests",
    summary="Replace the membership and its order",
)
async def replace_tests(
    test_set_id: uuid.UUID, body: MembersReplace, session: DbSession, _: Member
) -> MembersChanged:
    """The set then holds exactly the tests sent, in that order."""
    test_set = await service.get_test_set_or_404(session, test_set_id, for_update=True)
    added = await service.replace_members(session, test_set, body.test_ids)
    return MembersChanged(test_count=len(body.test_ids), added=added)


@router.delete(
    "/{test_set_id}/tests/{test_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="test_sets_remove_test",
    summary="Remove a test from the set",
)
async def remove_test(
    test_set_id: uuid.UUID, test_id: uuid.UUID, session: DbSession, _: Member
) -> None:
    """The test itself stays in the project."""
    test_set = await service.get_test_set_or_404(session, test_set_id, for_update=True)
    await service.remove_member(session, test_set, test_id)


# --- versions -------------------------------------------------------------------------------


@router.post(
    "/{test_set_id}/versions",
    responses={200: {"model": VersionRead, "description": "Nothing changed: the latest version"}},
    status_code=status.HTTP_201_CREATED,
    operation_id="test_sets_publish_version",
    summary="Publish: snapshot the current cases (returns the latest version if unchanged)",
)
async def publish_version(
    test_set_id: uuid.UUID,
    session: DbSession,
    _: Member,
    response: Response,
    body: VersionCreate | None = None,
) -> VersionRead:
    """A version is immutable, numbered and hashed; runs pin one."""
    test_set = await service.get_test_set_or_404(session, test_set_id, for_update=True)
    version, created = await service.publish(session, test_set, body.note if body else None)
    if not created:
        response.status_code = status.HTTP_200_OK
    return VersionRead.model_validate(version)


@router.get(
    "/{test_set_id}/versions",
    operation_id="test_sets_list_versions",
    summary="List a test set's published versions",
)
async def list_versions(
    test_set_id: uuid.UUID, session: DbSession, _: Viewer, page: Pagination
) -> Page[VersionRead]:
    """Newest first, with their case counts and content hashes."""
    test_set = await service.get_test_set_or_404(session, test_set_id)
    rows, total = await crud.list_versions(
        session, test_set.id, limit=page.limit, offset=page.offset
    )
    items = [VersionRead.model_validate(row) for row in rows]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get(
    "/{test_set_id}/versions/{number}",
    operation_id="test_sets_read_version",
    summary="Read a published version",
)
async def read_version(
    test_set_id: uuid.UUID, number: VersionNumber, session: DbSession, _: Viewer
) -> VersionRead:
    """Its number, case count, content hash and publication time."""
    test_set = await service.get_test_set_or_404(session, test_set_id)
    return VersionRead.model_validate(await service.get_version_or_404(session, test_set, number))


@router.get(
    "/{test_set_id}/versions/{number}/cases",
    operation_id="test_sets_list_version_cases",
    summary="The cases of a published version",
)
async def list_version_cases(
    test_set_id: uuid.UUID, number: VersionNumber, session: DbSession, _: Viewer, page: Pagination
) -> Page[VersionCaseRead]:
    """Each case as it was when the version was published, in order, paginated."""
    test_set = await service.get_test_set_or_404(session, test_set_id)
    version = await service.get_version_or_404(session, test_set, number)
    rows, total = await version_cases.list_version_cases(
        session, version.id, limit=page.limit, offset=page.offset
    )
    items = [VersionCaseRead.model_validate(row) for row in rows]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


# --- import and export ----------------------------------------------------------------------


@router.get(
    "/{test_set_id}/export",
    response_class=Response,
    responses={200: {"content": {media: {} for media in EXPORT_TYPES.values()}}},
    operation_id="test_sets_export",
    summary="Export the set's cases (current, or a published version)",
)
async def export_tests(
    test_set_id: uuid.UUID,
    session: DbSession,
    principal: Viewer,
    format: Literal["csv", "json", "jsonl"] = "json",
    version: Annotated[
        int | None, Query(ge=1, le=MAX_INT4, description="A published version")
    ] = None,
) -> Response:
    """As CSV (spreadsheet formulas neutralised), JSON or JSONL, as a file download."""
    test_set = await service.get_test_set_or_404(session, test_set_id)
    content = await service.export(session, principal, test_set, format, version_number=version)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", test_set.name).strip("-") or "test-set"
    suffix = f"-v{version}" if version else ""
    return StreamingResponse(
        content,
        media_type=EXPORT_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{stem}{suffix}.{format}"'},
    )
