from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query, status

from database.deps import DbSession, Member, Pagination, Viewer
from database.organizations.audit import RequestMetaDep, record_deletion
from database.routing import api_router
from database.tests import crud, service
from database.tests.agent_fields import expected_schemas
from database.tests.crud import TestFilters, TestSort
from database.tests.schemas import Label, Tag, TestCreate, TestRead, TestUpdate
from utils.problems import errors
from utils.save_checks import check_schemas, schemas_checked_by_handler
from utils.schemas import Page

router = api_router(prefix="/tests", tags=["tests"])
# The filters take what the columns store: trimmed, and no longer (a longer tag was cut to 100
# characters by its parameter's cast to VARCHAR(100)[], and matched a tag it did not name).
Filter = Annotated[Label | None, Query()]


@router.get(
    "",
    operation_id="tests_list",
    summary="Tests, filtered, sorted and paginated",
)
async def list_tests(
    session: DbSession,
    _: Viewer,
    page: Pagination,
    project_id: uuid.UUID | None = None,
    test_set_id: uuid.UUID | None = None,
    behavior: Filter = None,
    category: Filter = None,
    topic: Filter = None,
    tag: Annotated[list[Tag], Query(description="Has every given tag")] = [],  # noqa: B006
    q: Annotated[str | None, Query(max_length=500, description="Text in input or expected")] = None,
    sort: Annotated[
        TestSort, Query(description="`position` (set order) needs test_set_id")
    ] = "created_at",
) -> Page[TestRead]:
    """Filter by project, test set, behavior, category, topic, tag or text; sort by creation
    time, topic, category, behavior or position in the set."""
    if sort == "position" and test_set_id is None:
        sort = "created_at"
    filters = TestFilters(
        project_id=project_id,
        test_set_id=test_set_id,
        behavior=behavior,
        category=category,
        topic=topic,
        tags=tag,
        q=q,
    )
    rows, total = await crud.list_test_rows(
        session, filters, sort=sort, limit=page.limit, offset=page.offset
    )
    items = [TestRead.model_validate(row) for row in rows]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="tests_create",
    dependencies=[Depends(schemas_checked_by_handler)],
    summary="Create a test",
)
async def create_test(body: TestCreate, session: DbSession, principal: Member) -> TestRead:
    """A test is an input (text or a chat) with an optional expected output, context and labels."""
    await check_schemas(expected_schemas(body.expected_tool_calls), field="expected_tool_calls")
    return TestRead.model_validate(await service.create_test(session, principal, body))


@router.get(
    "/{test_id}",
    operation_id="tests_read",
    summary="Read a test",
)
async def read_test(test_id: uuid.UUID, session: DbSession, _: Viewer) -> TestRead:
    """The test as it is now; published test-set versions keep their own copy."""
    return TestRead.model_validate(await service.read_test_or_404(session, test_id))


@router.patch(
    "/{test_id}",
    operation_id="tests_update",
    dependencies=[Depends(schemas_checked_by_handler)],
    summary="Edit a test (published test-set versions keep the old text)",
    responses=errors(409),
)
async def update_test(
    test_id: uuid.UUID, body: TestUpdate, session: DbSession, _: Member
) -> TestRead:
    """Fields left out stay as they are; the next published version takes the change."""
    await check_schemas(expected_schemas(body.expected_tool_calls), field="expected_tool_calls")
    test = await service.get_test_or_404(session, test_id, to_edit=True)
    return TestRead.model_validate(await service.update_test(session, test, body))


@router.delete(
    "/{test_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="tests_delete",
    summary="Delete a test",
)
async def delete_test(
    test_id: uuid.UUID, session: DbSession, principal: Member, meta: RequestMetaDep
) -> None:
    """It leaves every test set; published versions keep their copy."""
    test = await service.get_test_or_404(session, test_id, deleting=True)
    await crud.delete_test(session, test)
    await record_deletion(session, principal, meta, "test", test.id, project_id=test.project_id)
