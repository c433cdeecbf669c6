"""Queries of test sets, their membership and their versions (a version's cases are read in
version_cases.py). Flush, never commit."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Uuid,
    any_,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import Text

from database.test_sets.crud.members import clear_members as clear_members
from database.test_sets.crud.members import count_held as count_held
from database.test_sets.crud.members import count_members as count_members
from database.test_sets.crud.members import held_ids as held_ids
from database.test_sets.crud.members import insert_members as insert_members
from database.test_sets.crud.members import max_position as max_position
from database.test_sets.crud.members import member_ids as member_ids
from database.test_sets.crud.members import member_order as member_order
from database.test_sets.crud.members import remove_member as remove_member
from database.test_sets.models import TestSet, TestSetVersion
from database.test_sets.slice_index import VersionSlices
from database.tests.crud import ROWS_PER_STATEMENT
from database.tests.models import TestCase
from utils.crud import custom_plans, delete_once, flush_unique, paginate, uuid_array

DUPLICATE_NAME = "A test set with this name already exists in the project"


async def create_test_set(session: AsyncSession, test_set: TestSet) -> TestSet:
    session.add(test_set)
    await flush_unique(session, DUPLICATE_NAME)
    return test_set


async def get_test_set(
    session: AsyncSession, test_set_id: uuid.UUID, *, for_update: bool = False
) -> TestSet | None:
    query = select(TestSet).where(TestSet.id == test_set_id)
    if for_update:  # as it stands once locked, not as this session read it before
        query = query.with_for_update().execution_options(populate_existing=True)
    return await session.scalar(query)


async def list_test_sets(
    session: AsyncSession, *, project_id: uuid.UUID | None, limit: int, offset: int
) -> tuple[list[TestSet], int]:
    query = select(TestSet).order_by(TestSet.created_at, TestSet.id)
    if project_id is not None:
        query = query.where(TestSet.project_id == project_id)
    return await paginate(session, query, limit=limit, offset=offset)


async def save_test_set(session: AsyncSession) -> None:
    await flush_unique(session, DUPLICATE_NAME)


async def delete_test_set(session: AsyncSession, test_set: TestSet) -> None:
    await delete_once(session, test_set, "Test set")


async def counts(
    session: AsyncSession, test_set_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[int, int | None]]:
    """(test count, latest version number) of each set."""
    latest = (
        select(func.max(TestSetVersion.number))
        .where(TestSetVersion.test_set_id == TestSet.id)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(TestSet.id, TestSet.member_count, latest).where(TestSet.id.in_(test_set_ids))
    )
    found = {test_set_id: (int(held), number) for test_set_id, held, number in rows.all()}
    return {i: found.get(i, (0, None)) for i in test_set_ids}


# --- membership (members.py) ---------------------------------------------------------------


CASE_COLUMNS = (
    TestCase.id,
    TestCase.input,
    TestCase.messages,
    TestCase.expected_output,
    TestCase.context,
    TestCase.behavior,
    TestCase.category,
    TestCase.topic,
    TestCase.tags,
    TestCase.variables,
    TestCase.meta.label("meta"),
    TestCase.expected_tool_calls,
    TestCase.tool_responses,
    TestCase.max_steps,
    TestCase.conversation,
)


async def member_tests(session: AsyncSession, test_set_id: uuid.UUID) -> list[Any]:
    """The set's tests in order, as plain rows (no ORM objects: publishing reads thousands).

    Members first, then their tests by id: this plan stays linear even when the planner has
    no statistics yet (freshly imported tests), where a join became a quadratic nested loop.
    """
    return await tests_in_order(session, await member_ids(session, test_set_id))


def text_bytes(value: Any) -> ColumnElement[int]:
    """A value's bytes as text, as an export writes it: not its stored size, which compression
    can make a hundredth of it."""
    return func.coalesce(func.octet_length(value.cast(Text)), 0)


@functools.cache
def _case_sizes() -> Select[uuid.UUID, int]:
    size = text_bytes(CASE_COLUMNS[1])
    for column in CASE_COLUMNS[2:]:
        size += text_bytes(column)
    ids = bindparam("ids", type_=ARRAY(Uuid()))
    return select(TestCase.id, size).where(TestCase.id == any_(ids))


async def case_sizes(session: AsyncSession, test_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """What each test's case weighs once read: its columns' bytes as text."""
    async with custom_plans(session):
        connection = await session.connection()  # (Core, as tests_in_order)
        rows = await connection.execute(_case_sizes(), {"ids": list(test_ids)})
    return {test_id: weight for test_id, weight in rows.all()}


async def tests_in_order(session: AsyncSession, test_ids: Sequence[uuid.UUID]) -> list[Any]:
    """The tests of `test_ids` (those that still exist), in that order, as plain rows."""
    order = {test_id: index for index, test_id in enumerate(test_ids)}
    async with custom_plans(session):
        # Through Core: the session's ORM loading of the rows took 8 % of a test set's export.
        connection = await session.connection()
        rows = await connection.execute(
            select(*CASE_COLUMNS).where(TestCase.id == any_(uuid_array("ids", list(order))))
        )
    return sorted(rows.all(), key=lambda row: order[row.id])


# --- versions -------------------------------------------------------------------------------


_TOOL_NAMES = text("""
SELECT DISTINCT c.position, item ->> 'name'
FROM test_set_version_cases AS c,
     jsonb_array_elements(coalesce(c."case" -> 'expected_tool_calls', '[]')
                          || coalesce(c."case" -> 'tool_responses', '[]')) AS item
WHERE c.version_id = :version_id
  AND (c."case" ? 'expected_tool_calls' OR c."case" ? 'tool_responses')
  AND item ->> 'name' IS NOT NULL
ORDER BY c.position
""")


_SIMULATED = text("""
SELECT EXISTS (
    SELECT 1 FROM test_set_version_cases
    WHERE version_id = :version_id
      AND jsonb_typeof("case" -> 'conversation' -> 'simulated') = 'object'
)
""")


async def has_simulated_users(session: AsyncSession, version_id: uuid.UUID) -> bool:
    return bool(await session.scalar(_SIMULATED, {"version_id": version_id}))


async def tool_names(session: AsyncSession, version_id: uuid.UUID) -> list[tuple[int, str]]:
    """(position, tool name) of every tool a version's cases expect or mock."""
    rows = await session.execute(_TOOL_NAMES, {"version_id": version_id})
    return [(position, name) for position, name in rows.all()]


async def revisions(session: AsyncSession, test_set_id: uuid.UUID) -> tuple[int, int | None]:
    """(content revision, published revision) as they stand now in this transaction (the
    triggers that bump the first may have run since the set was loaded)."""
    row = (
        await session.execute(
            select(TestSet.content_revision, TestSet.published_revision).where(
                TestSet.id == test_set_id
            )
        )
    ).one()
    return row[0], row[1]


async def mark_published(session: AsyncSession, test_set_id: uuid.UUID, revision: int) -> None:
    """Records that the set's latest version holds its cases as of `revision` (a plain UPDATE:
    publishing is not an edit of the set, so `updated_at` stays)."""
    await session.execute(
        text("UPDATE test_sets SET published_revision = :revision WHERE id = :id"),
        {"revision": revision, "id": test_set_id},
    )


async def latest_version(session: AsyncSession, test_set_id: uuid.UUID) -> TestSetVersion | None:
    return await session.scalar(
        select(TestSetVersion)
        .where(TestSetVersion.test_set_id == test_set_id)
        .order_by(TestSetVersion.number.desc())
        .limit(1)
    )


async def get_version(
    session: AsyncSession, test_set_id: uuid.UUID, number: int
) -> TestSetVersion | None:
    return await session.scalar(
        select(TestSetVersion).where(
            TestSetVersion.test_set_id == test_set_id, TestSetVersion.number == number
        )
    )


async def version_slices(
    session: AsyncSession, version_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, VersionSlices]:
    """The versions' slices (slice_index), by id."""
    kept = (
        TestSetVersion.slice_values,
        TestSetVersion.slice_codes,
        TestSetVersion.case_count,
    )
    rows = await session.execute(
        select(TestSetVersion.id, *kept).where(TestSetVersion.id.in_(version_ids))
    )
    return {row[0]: VersionSlices.of(*row[1:]) for row in rows}


async def list_versions(
    session: AsyncSession, test_set_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[TestSetVersion], int]:
    query = (
        select(TestSetVersion)
        .where(TestSetVersion.test_set_id == test_set_id)
        .order_by(TestSetVersion.number.desc())
    )
    return await paginate(session, query, limit=limit, offset=offset)


# A version's cases, thousands a statement (an executemany sends a statement per row).
_INSERT_VERSION_CASES = text("""
INSERT INTO test_set_version_cases (version_id, position, organization_id, test_id, "case")
SELECT :version_id, (c ->> 'position')::integer, :organization_id, (c ->> 'test_id')::uuid,
       c -> 'case'
FROM jsonb_array_elements(:cases) AS c
""").bindparams(
    bindparam("version_id", type_=Uuid()),
    bindparam("organization_id", type_=Uuid()),
    bindparam("cases", type_=JSONB()),
)


_DEFER_VERSION_KEY = text(
    "SET CONSTRAINTS fk_test_set_version_cases_version_id_test_set_versions DEFERRED"
)


async def defer_version_key(session: AsyncSession) -> None:
    """Until the transaction commits, version cases may name a version not written yet."""
    await session.execute(_DEFER_VERSION_KEY)


async def insert_version_cases(
    session: AsyncSession,
    version: TestSetVersion,
    cases: Sequence[tuple[uuid.UUID | None, dict[str, Any]]],
    *,
    first_position: int = 0,
) -> None:
    for start in range(0, len(cases), ROWS_PER_STATEMENT):
        batch = cases[start : start + ROWS_PER_STATEMENT]
        await session.execute(
            _INSERT_VERSION_CASES,
            {
                "version_id": version.id,
                "organization_id": version.organization_id,
                "cases": [
                    {
                        "position": first_position + start + offset,
                        "test_id": None if test_id is None else str(test_id),
                        "case": case,
                    }
                    for offset, (test_id, case) in enumerate(batch)
                ],
            },
        )


async def version_numbers(
    session: AsyncSession, version_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    rows = await session.execute(
        select(TestSetVersion.id, TestSetVersion.number).where(TestSetVersion.id.in_(version_ids))
    )
    return {version_id: number for version_id, number in rows.all()}
