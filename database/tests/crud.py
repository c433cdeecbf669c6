"""Queries of tests (test cases). Flush, never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, Uuid, any_, bindparam, func, or_, select, text
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession

from database.core import new_id
from database.tests.agent_fields import AGENT_FIELDS, without_absent_agent_fields
from database.tests.models import TestCase, TestSetMember
from utils.crud import custom_plans, paginate, uuid_array

TestSort = Literal["created_at", "-created_at", "topic", "category", "behavior", "position"]


@dataclass(frozen=True)
class TestFilters:
    __test__ = False

    project_id: uuid.UUID | None = None
    test_set_id: uuid.UUID | None = None
    behavior: str | None = None
    category: str | None = None
    topic: str | None = None
    tags: Sequence[str] = ()
    q: str | None = None


_ORDER = {
    "created_at": (TestCase.created_at, TestCase.id),
    "-created_at": (TestCase.created_at.desc(), TestCase.id.desc()),
    "topic": (TestCase.topic, TestCase.id),
    "category": (TestCase.category, TestCase.id),
    "behavior": (TestCase.behavior, TestCase.id),
}


def _filtered(query: Select[Any], filters: TestFilters) -> Select[Any]:
    """`query` of tests, narrowed by every filter but the set."""
    for column, value in (
        (TestCase.project_id, filters.project_id),
        (TestCase.behavior, filters.behavior),
        (TestCase.category, filters.category),
        (TestCase.topic, filters.topic),
    ):
        if value is not None:
            query = query.where(column == value)
    if filters.tags:
        query = query.where(TestCase.tags.contains(list(filters.tags)))
    if filters.q:
        query = query.where(
            or_(
                TestCase.input.icontains(filters.q, autoescape=True),
                TestCase.expected_output.icontains(filters.q, autoescape=True),
            )
        )
    return query


def _narrowed(filters: TestFilters) -> bool:
    """Whether a filter other than the set applies."""
    return _filtered(select(TestCase.id), filters).whereclause is not None


async def list_tests(
    session: AsyncSession, filters: TestFilters, *, sort: TestSort, limit: int, offset: int
) -> tuple[list[TestCase], int]:
    if filters.test_set_id is not None:
        return await _list_set_tests(session, filters, sort=sort, limit=limit, offset=offset)
    query = _filtered(select(TestCase), filters).order_by(*_ORDER[sort])
    return await paginate(session, query, limit=limit, offset=offset)


async def _list_set_tests(
    session: AsyncSession, filters: TestFilters, *, sort: TestSort, limit: int, offset: int
) -> tuple[list[TestCase], int]:
    """A set's tests: its members, then their tests by id, each a query of one table.

    Not a join: until autovacuum analyses a new organization's rows (up to a minute after an
    import), the statistics do not know it, and a join was planned as a nested loop reading the
    organization's members once per test (10,000 tests: half a minute)."""
    ids = await _member_ids(session, filters.test_set_id)
    in_set = TestCase.id == any_(uuid_array("ids", ids))
    async with custom_plans(session):
        if sort != "position":
            query = _filtered(select(TestCase), filters).where(in_set).order_by(*_ORDER[sort])
            if _narrowed(filters):
                return await paginate(session, query, limit=limit, offset=offset)
            rows = await session.scalars(query.limit(limit).offset(offset))
            return list(rows.all()), len(ids)  # every member is a test the caller can see
        if _narrowed(filters):
            matching = await session.scalars(_filtered(select(TestCase.id), filters).where(in_set))
            kept = set(matching.all())
            ids = [test_id for test_id in ids if test_id in kept]
        page = ids[offset : offset + limit]
        rows = await session.scalars(
            select(TestCase).where(TestCase.id == any_(uuid_array("page", page)))
        )
    found = {test.id: test for test in rows.all()}
    return [found[test_id] for test_id in page if test_id in found], len(ids)


async def _member_ids(session: AsyncSession, test_set_id: uuid.UUID | None) -> list[uuid.UUID]:
    """The set's test ids in its order, as one array (read far faster than a row each)."""
    in_order = aggregate_order_by(
        TestSetMember.test_id, TestSetMember.position, TestSetMember.test_id
    )
    ids = await session.scalar(
        select(func.array_agg(in_order)).where(TestSetMember.test_set_id == test_set_id)
    )
    return list(ids or [])


async def get_test(session: AsyncSession, test_id: uuid.UUID) -> TestCase | None:
    return await session.get(TestCase, test_id)


async def create_test(session: AsyncSession, test: TestCase) -> TestCase:
    session.add(test)
    await session.flush()
    return test


# Many tests in one statement, each a JSON object of one document: an executemany sends a
# statement per row. `->` keeps a JSON null a JSON null, as a bound JSONB value stores it.
_INSERT_TESTS = text("""
INSERT INTO tests (id, organization_id, project_id, input, expected_output, behavior, category,
                   topic, tags, messages, context, variables, metadata, expected_tool_calls,
                   tool_responses, max_steps, conversation)
SELECT (c ->> 'id')::uuid, :organization_id, :project_id, c ->> 'input', c ->> 'expected_output',
       c ->> 'behavior', c ->> 'category', c ->> 'topic',
       CASE WHEN jsonb_typeof(c -> 'tags') = 'array'
            THEN ARRAY(SELECT jsonb_array_elements_text(c -> 'tags')) END,
       c -> 'messages', c -> 'context', c -> 'variables', c -> 'metadata',
       c -> 'expected_tool_calls', c -> 'tool_responses', (c ->> 'max_steps')::integer,
       c -> 'conversation'
FROM jsonb_array_elements(:cases) AS c
""").bindparams(
    bindparam("organization_id", type_=Uuid()),
    bindparam("project_id", type_=Uuid()),
    bindparam("cases", type_=JSONB()),
)
# The columns' defaults (a case that leaves them out), as the model declares them.
_DEFAULTS: dict[str, Any] = {"context": [], "tags": [], "variables": {}}
ROWS_PER_STATEMENT = 5000  # bounds the document one statement carries


async def insert_tests(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    project_id: uuid.UUID,
    cases: Sequence[dict[str, Any]],
) -> list[uuid.UUID]:
    """Inserts many tests, a few thousand a statement; returns their ids in input order."""
    ids = [new_id() for _ in cases]
    for start in range(0, len(cases), ROWS_PER_STATEMENT):
        batch = zip(
            ids[start : start + ROWS_PER_STATEMENT],
            cases[start : start + ROWS_PER_STATEMENT],
            strict=True,
        )
        await session.execute(
            _INSERT_TESTS,
            {
                "organization_id": organization_id,
                "project_id": project_id,
                "cases": [
                    {
                        **_DEFAULTS,
                        **case,
                        "metadata": case.get("metadata") or {},
                        "id": str(test_id),
                    }
                    for test_id, case in batch
                ],
            },
        )
    return ids


def case_fields(test: Any) -> dict[str, Any]:
    """The case as TestCaseFields would dump it (what snapshots and exports hold), from a
    TestCase or a row with the same attribute names."""
    return without_absent_agent_fields(
        {
            "input": test.input,
            "messages": test.messages,
            "expected_output": test.expected_output,
            "context": list(test.context or []),
            "behavior": test.behavior,
            "category": test.category,
            "topic": test.topic,
            "tags": list(test.tags or []),
            "variables": dict(test.variables or {}),
            "metadata": dict(test.meta or {}),
            **{key: getattr(test, key, None) for key in AGENT_FIELDS},
        }
    )


async def existing_test_ids(
    session: AsyncSession, test_ids: Sequence[uuid.UUID], *, project_id: uuid.UUID
) -> set[uuid.UUID]:
    rows = await session.scalars(
        select(TestCase.id).where(TestCase.id.in_(test_ids), TestCase.project_id == project_id)
    )
    return set(rows.all())


async def delete_test(session: AsyncSession, test: TestCase) -> None:
    await session.delete(test)
    await session.flush()


async def save_test(session: AsyncSession) -> None:
    await session.flush()
