"""The hottest reads go to the driver's connection (database.driver.driver_connection): in the
request's transaction, under its tenant, and with the same answers as the ORM's reads."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, text

from database.core import Database, Tenant, enter_tenant
from database.driver import driver_connection
from database.tests import crud, schemas
from database.tests.crud import TestFilters
from database.tests.models import TestCase
from tests.helpers import assert_problem, create_api_key, create_project, create_test, register


async def test_a_tenant_read_outside_the_transaction_is_refused(committed_database: Database):
    """The transaction begins with the session's first statement or with `enter_tenant`;
    before it, a statement on the driver would run in none, where no tenant is set, so a
    tenant read is refused."""
    organization = uuid.uuid4()
    async with committed_database.sessionmaker() as session:
        with pytest.raises(RuntimeError):
            await driver_connection(session)
        # A SECURITY DEFINER lookup needs no transaction.
        driver = await driver_connection(session, in_transaction=False)
        assert await driver.fetchval("SELECT 1") == 1
        await enter_tenant(session, Tenant(organization))
        driver = await driver_connection(session)
        assert await driver.fetchval("SELECT current_setting('app.organization_id', true)") == str(
            organization
        )
        await session.commit()
        # A new transaction has not begun yet: refused again, never read without the tenant.
        with pytest.raises(RuntimeError):
            await driver_connection(session)


async def test_the_driver_shares_the_sessions_transaction(committed_database: Database):
    organization = uuid.uuid4()
    async with committed_database.transaction(Tenant(organization)) as session:
        await session.execute(text("SET LOCAL application_name = 'driver-reads'"))
        driver = await driver_connection(session)
        assert await driver.fetchval("SHOW application_name") == "driver-reads"
    async with committed_database.transaction(Tenant(organization)) as session:
        driver = await driver_connection(session)
        assert await driver.fetchval("SHOW application_name") != "driver-reads"


async def test_rows_read_on_the_driver_match_the_entities(client, database: Database):
    owner = await register(client)
    project = await create_project(client, owner)
    inputs = ["100% sure", "snake_case", "a/b", "plain", "50 percent"]
    created = []
    for position, value in enumerate(inputs):
        created.append(
            await create_test(
                client,
                owner,
                project["id"],
                input=value,
                tags=["x"] if position % 2 else ["x", "y"],
                topic=f"t{position % 2}",
                metadata={"n": position, "big": 2**70},
                variables={"v": [1, {"w": None}]},
            )
        )
    shapes = [
        TestFilters(),
        TestFilters(q="%"),
        TestFilters(q="_"),
        TestFilters(q="/"),
        TestFilters(q="PERCENT", tags=("x",)),
        TestFilters(project_id=uuid.UUID(project["id"]), tags=("x", "y"), topic="t0"),
        TestFilters(behavior="nothing"),
    ]
    async with database.transaction(Tenant(owner.organization_id)) as session:
        everything = list(await session.scalars(select(TestCase)))
        for filters in shapes:
            for sort in ("created_at", "-created_at", "topic"):
                found = _expected(everything, filters, sort)
                tests, total = found[1:4], len(found)
                rows, row_total = await crud.list_test_rows(
                    session, filters, sort=sort, limit=3, offset=1
                )
                assert row_total == total
                expected = [schemas.TestRead.model_validate(t).model_dump_json() for t in tests]
                got = [schemas.TestRead.model_validate(r).model_dump_json() for r in rows]
                assert got == expected, (filters, sort)
        matches = await crud.list_test_rows(
            session, TestFilters(q="%"), sort="created_at", limit=10, offset=0
        )
        assert [row["input"] for row in matches[0]] == ["100% sure"]
        first = await crud.get_test(session, uuid.UUID(created[0]["id"]))
        row = await crud.read_test(session, uuid.UUID(created[0]["id"]))
        assert first is not None and row is not None
        assert row["meta"]["big"] == 2**70  # exact, as stored
        assert schemas.TestRead.model_validate(row) == schemas.TestRead.model_validate(first)
        assert await crud.read_test(session, uuid.uuid4()) is None


def _expected(tests: list[TestCase], filters: TestFilters, sort: str) -> list[TestCase]:
    """The list as its filters and sort say, worked out here (ASCII text, topics all set)."""

    def matches(test: TestCase) -> bool:
        texts = (test.input, test.expected_output)
        return filters.q is None or any(filters.q.lower() in (t or "").lower() for t in texts)

    def kept(test: TestCase) -> bool:
        equal = (
            ("project_id", filters.project_id),
            ("behavior", filters.behavior),
            ("category", filters.category),
            ("topic", filters.topic),
        )
        return (
            all(wanted is None or getattr(test, name) == wanted for name, wanted in equal)
            and set(filters.tags) <= set(test.tags or ())
            and matches(test)
        )

    key = (lambda t: (t.topic, t.id)) if sort == "topic" else (lambda t: (t.created_at, t.id))
    return sorted(filter(kept, tests), key=key, reverse=sort.startswith("-"))


async def test_an_api_key_reads_its_own_organizations_test_only(client):
    owner, other = await register(client), await register(client)
    project = await create_project(client, owner)
    test = await create_test(client, owner, project["id"])
    key = (await create_api_key(client, owner, role="viewer"))["key"]
    foreign = (await create_api_key(client, other, role="viewer"))["key"]
    url = f"/api/v1/tests/{test['id']}"
    read = await client.get(url, headers={"X-API-Key": key})
    assert read.status_code == 200 and read.json() == test
    assert (await client.get(url, headers={"X-API-Key": foreign})).status_code == 404
    listed = await client.get("/api/v1/tests", headers={"X-API-Key": foreign})
    assert listed.json()["total"] == 0


async def test_a_value_postgresql_refuses_is_a_422_as_through_the_session(client):
    """Errors of the driver's reads come out as SQLAlchemy's, which the API answers."""
    owner = await register(client)
    for params in ({"q": "a\x00b"}, {"topic": "t\x00"}):
        response = await client.get("/api/v1/tests", params=params, headers=owner.headers)
        assert_problem(response, 422)
