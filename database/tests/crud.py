"""Queries of tests (test cases). Flush, never commit."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Dialect,
    Select,
    Uuid,
    any_,
    bindparam,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from database.driver import driver_connection
from database.tests.agent_fields import AGENT_FIELDS, without_absent_agent_fields
from database.tests.models import TestCase, TestSetMember
from utils.crud import (
    custom_plans,
    delete_once,
    json_row_packs,
    local_settings,
    paginate,
    uuid_array,
)
from utils.ids import new_id

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


# Each filter, by the name of its bound value: one definition for the ORM's queries and for
# the list's statements on the driver's connection, compiled once per combination of filters.
_CONDITIONS: dict[str, ColumnElement[bool]] = {
    "project_id": TestCase.project_id == bindparam("project_id"),
    "behavior": TestCase.behavior == bindparam("behavior"),
    "category": TestCase.category == bindparam("category"),
    "topic": TestCase.topic == bindparam("topic"),
    "tags": TestCase.tags.contains(bindparam("tags")),
    "q": or_(
        TestCase.input.icontains(bindparam("q"), escape="/"),
        TestCase.expected_output.icontains(bindparam("q"), escape="/"),
    ),
}


def _filter_values(filters: TestFilters) -> dict[str, Any]:
    """The bound values of the filters that apply (all but the set), by name."""
    values: dict[str, Any] = {
        name: value
        for name, value in (
            ("project_id", filters.project_id),
            ("behavior", filters.behavior),
            ("category", filters.category),
            ("topic", filters.topic),
        )
        if value is not None
    }
    if filters.tags:
        values["tags"] = list(filters.tags)
    if filters.q:
        # As `autoescape=True` escapes a literal: the text is matched as it is, wildcards too.
        escaped = filters.q.replace("/", "//").replace("%", "/%").replace("_", "/_")
        values["q"] = escaped
    return values


def _filtered(query: Select[Any], filters: TestFilters) -> Select[Any]:
    """`query` of tests, narrowed by every filter but the set."""
    values = _filter_values(filters)
    if not values:
        return query
    return query.where(*(_CONDITIONS[name] for name in values)).params(values)


def _narrowed(filters: TestFilters) -> bool:
    """Whether a filter other than the set applies."""
    return bool(_filter_values(filters))


async def list_test_rows(
    session: AsyncSession, filters: TestFilters, *, sort: TestSort, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of tests as plain rows (`TestRead`'s fields; `meta` for the metadata): outside a
    set, both statements go to the driver's connection."""
    if filters.test_set_id is not None:
        tests, total = await _list_set_tests(
            session, filters, sort=sort, limit=limit, offset=offset
        )
        return [_row_of(test) for test in tests], total
    values = _filter_values(filters)
    count, page = _list_statements(frozenset(values), sort, session.get_bind().dialect)
    driver = await driver_connection(session)
    values.update(limit=limit, offset=offset)
    total = await driver.fetchval(count.sql, *count.arguments(values))
    rows = await driver.fetch(page.sql, *page.arguments(values))
    # items(): half the time of dict(row), which asks the record for each name in turn.
    return [dict(row.items()) for row in rows], total


async def read_test(session: AsyncSession, test_id: uuid.UUID) -> dict[str, Any] | None:
    """A test as a plain row (see `list_test_rows`), on the driver's connection."""
    read = _read_statement(session.get_bind().dialect)
    row = await (await driver_connection(session)).fetchrow(read.sql, test_id)
    return dict(row.items()) if row else None


# What TestRead shows, `meta` named as the entity's attribute it validates from.
_READ_COLUMNS = [
    column.label("meta") if column.key == "metadata" else column
    for column in TestCase.__table__.c
    if column.key != "organization_id"
]


def _row_of(test: TestCase) -> dict[str, Any]:
    return {column.key: getattr(test, column.key) for column in _READ_COLUMNS}


@dataclass(frozen=True)
class _Compiled:
    """A statement's SQL for the driver, and the names of its parameters in order."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, statement: Select[Any], dialect: Dialect) -> _Compiled:
        compiled = statement.compile(dialect=dialect)
        return cls(str(compiled), tuple(compiled.positiontup or ()))

    def arguments(self, values: dict[str, Any]) -> list[Any]:
        return [values[name] for name in self.names]


@functools.cache
def _list_statements(
    names: frozenset[str], sort: TestSort, dialect: Dialect
) -> tuple[_Compiled, _Compiled]:
    """The count and the page of a list filtered by `names` (at most 2^6 x 6 of them)."""
    where = [_CONDITIONS[name] for name in sorted(names)]
    count = select(func.count()).select_from(TestCase).where(*where)
    page = (
        select(*_READ_COLUMNS)
        .where(*where)
        .order_by(*_ORDER[sort])
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )
    return _Compiled.of(count, dialect), _Compiled.of(page, dialect)


@functools.cache
def _read_statement(dialect: Dialect) -> _Compiled:
    return _Compiled.of(select(*_READ_COLUMNS).where(TestCase.id == bindparam("id")), dialect)


async def _list_set_tests(
    session: AsyncSession, filters: TestFilters, *, sort: TestSort, limit: int, offset: int
) -> tuple[list[TestCase], int]:
    """A page of a set's tests, paged by the database: a set may hold hundreds of thousands,
    and its whole order made into a list of ids held the event loop for a second each page.

    In the set's order, the members are paged (matched with the filters' tests when filtered),
    then the page's tests are read by id; in another order, the tests among the members are
    sorted and paged."""
    members = select(TestSetMember.test_id).where(TestSetMember.test_set_id == filters.test_set_id)
    async with _set_listing_plans(session, filters):
        if sort != "position":
            in_set = TestCase.id.in_(members)
            query = _filtered(select(TestCase), filters).where(in_set).order_by(*_ORDER[sort])
            if _narrowed(filters):
                return await paginate(session, query, limit=limit, offset=offset)
            rows = await session.scalars(query.limit(limit).offset(offset))
            # every member is a test the caller can see
            total = await session.scalar(select(func.count()).select_from(members.subquery()))
            return list(rows.all()), total or 0
        if _narrowed(filters):
            matching = _filtered(select(TestCase.id), filters)
            members = members.where(TestSetMember.test_id.in_(matching))
        in_order = members.order_by(TestSetMember.position, TestSetMember.test_id)
        page, total = await paginate(session, in_order, limit=limit, offset=offset)
        rows = await session.scalars(
            select(TestCase).where(TestCase.id == any_(uuid_array("page", page)))
        )
    found = {test.id: test for test in rows.all()}
    return [found[test_id] for test_id in page if test_id in found], total


def _set_listing_plans(
    session: AsyncSession, filters: TestFilters
) -> AbstractAsyncContextManager[None]:
    """Until autovacuum analyses a new organization's rows (up to a minute after an import),
    the statistics do not know it: a set's members matched with the tests of a filter were
    planned as a nested loop reading the filter's tests once per member (10,000 members:
    4 million rows). Hashed, they are read once."""
    if _narrowed(filters):
        return local_settings(session, plan_cache_mode="force_custom_plan", enable_nestloop="off")
    return custom_plans(session)


async def get_test(session: AsyncSession, test_id: uuid.UUID) -> TestCase | None:
    return await session.get(TestCase, test_id)


# The sets holding a test, locked as its edit's trigger will lock them (to move their content
# revision on), in id order: taken before the test, as adding members takes them.
_LOCK_SETS_OF_TEST = text(
    "SELECT s.id FROM test_sets s"
    " WHERE s.id IN (SELECT m.test_set_id FROM test_set_members m WHERE m.test_id = :test)"
    " ORDER BY s.id FOR NO KEY UPDATE"
)
_SETS_OF_TEST = text("SELECT m.test_set_id FROM test_set_members m WHERE m.test_id = :test")
_LOCKING_ATTEMPTS = 5


async def get_test_to_edit(
    session: AsyncSession, test_id: uuid.UUID, *, deleting: bool = False
) -> TestCase | None:
    """The test locked for an edit (or its deletion), as it stands once locked: edits take
    turns, each judging the test as the one before left it.

    Its sets are locked first, in id order, as adding members locks them (sets, then tests),
    and as the edit's trigger will lock them. Their list is read before the test is locked,
    though, and a set the test joined meanwhile would be locked by the trigger alone, out of
    order, while the edit holds the test and its other sets: a deadlock with that set's
    writers and with other edits. Once the test is locked, no set can gain it (adding a test
    locks it FOR SHARE), so the list is read again: when it grew, the attempt is rolled back
    to its savepoint, which releases the locks it took, and they are taken again in order."""
    for _ in range(_LOCKING_ATTEMPTS - 1):
        attempt = await session.begin_nested()
        test, all_sets_locked = await _lock_sets_then_test(session, test_id, deleting=deleting)
        if all_sets_locked:
            await attempt.commit()
            return test
        await attempt.rollback()
    # Beaten each time: the trigger locks the sets still missing (at worst a deadlock, a 409).
    test, _ = await _lock_sets_then_test(session, test_id, deleting=deleting)
    return test


async def _lock_sets_then_test(
    session: AsyncSession, test_id: uuid.UUID, *, deleting: bool
) -> tuple[TestCase | None, bool]:
    """The test, locked after its sets; and whether every set holding it now was locked."""
    locked = set((await session.execute(_LOCK_SETS_OF_TEST, {"test": test_id})).scalars())
    test = await session.scalar(
        select(TestCase)
        .where(TestCase.id == test_id)
        # FOR UPDATE as the DELETE, FOR NO KEY UPDATE as the UPDATE, takes it
        .with_for_update(key_share=not deleting)
        .execution_options(populate_existing=True)
    )
    if test is None:
        return None, True
    holding = set((await session.execute(_SETS_OF_TEST, {"test": test_id})).scalars())
    return test, holding <= locked


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
FROM jsonb_array_elements(CAST(:rows AS JSONB)) AS c
""").bindparams(
    bindparam("organization_id", type_=Uuid()),
    bindparam("project_id", type_=Uuid()),
)
# The columns' defaults (a case that leaves them out), as the model declares them; no messages
# are a JSON null, as the ORM writes them (a case may leave them out of its document).
_DEFAULTS: dict[str, Any] = {"context": [], "tags": [], "variables": {}, "messages": None}
ROWS_PER_STATEMENT = 5000  # bounds the document one statement carries
# Encoding and sending a statement holds the event loop: a pack of this size, about 20 ms.
MAX_STATEMENT_CHARS = 4 * 1024 * 1024


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
        rows = [
            {**_DEFAULTS, **case, "metadata": case.get("metadata") or {}, "id": str(test_id)}
            for test_id, case in batch
        ]
        for group in json_row_packs(rows, MAX_STATEMENT_CHARS):
            await session.execute(
                _INSERT_TESTS,
                {"organization_id": organization_id, "project_id": project_id, **group},
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
    """Those of the tests that are the project's, held (FOR SHARE) until the transaction ends:
    a deletion or an edit under way is waited for and seen. A deletion met later was a foreign
    key's 500; an edit committed after the test joined a set, but begun before (its trigger
    found no set to move on), left the set's next version with the old text for good."""
    rows = await session.scalars(
        select(TestCase.id)
        .where(TestCase.id.in_(test_ids), TestCase.project_id == project_id)
        .with_for_update(read=True)
    )
    return set(rows.all())


async def delete_test(session: AsyncSession, test: TestCase) -> None:
    await delete_once(session, test, "Test")


async def save_test(session: AsyncSession) -> None:
    await session.flush()
