"""A set's tests listed right after a large import, before the planner's statistics know the
organization: every statement of the listing must still be planned in linear time."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import httpx
import pytest

from database.core import Tenant
from tests.helpers import create_project, create_test_set, register, remove_account
from tests.planner import analyze, rows_handled, statements

CASES = 10_000
# Rows a linear plan handles for a 10,000-test set: a few passes over it. Planned as a nested
# loop matching every test against every member, it handles 50 million.
LINEAR = 10 * CASES


def _csv(rows: int) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["input", "expected_output", "topic"])
    for i in range(rows):
        writer.writerow([f"Case {i}: what is {i} + {i}?", str(2 * i), f"topic {i % 50}"])
    return buffer.getvalue().encode()


@pytest.fixture
async def known_organization(committed_database, app, owner_engine) -> AsyncIterator[None]:
    """Another organization's set, committed and analysed: the statistics an organization
    created since finds until autovacuum analyses its rows."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as http:
        other = await register(http)
        project = await create_project(http, other)
        created = await http.post(
            "/api/v1/tests/bulk",
            json={"project_id": project["id"], "tests": [{"input": f"q {i}"} for i in range(200)]},
            headers=other.headers,
        )
        assert created.status_code == 201, created.text
        await create_test_set(http, other, project["id"], created.json()["ids"])
    try:
        await analyze(owner_engine, "tests", "test_set_members")
        yield
    finally:
        await remove_account(owner_engine, other)


@pytest.mark.slow
async def test_the_first_page_right_after_a_10000_case_import_is_planned_linearly(
    known_organization, client, database, runtime_engine
):
    owner = await register(client)
    project = await create_project(client, owner)
    few = await client.post(
        "/api/v1/tests/bulk",
        json={"project_id": project["id"], "tests": [{"input": f"few {i}"} for i in range(4)]},
        headers=owner.headers,
    )
    small = await create_test_set(client, owner, project["id"], few.json()["ids"])
    big = await create_test_set(client, owner, project["id"])
    imported = await client.post(
        f"/api/v1/test-sets/{big['id']}/import",
        content=_csv(CASES),
        headers={**owner.headers, "Content-Type": "text/csv"},
    )
    assert imported.status_code == 201, imported.text

    listings = [
        ({"test_set_id": big["id"], "sort": "position"}, CASES, "Case 0:"),
        ({"test_set_id": big["id"]}, CASES, None),
        ({"test_set_id": big["id"], "sort": "position", "topic": "topic 7"}, 200, "Case 7:"),
        ({"test_set_id": small["id"], "sort": "position"}, 4, "few 0"),
    ]
    for params, total, first in listings:
        with statements(runtime_engine) as seen:
            response = await client.get("/api/v1/tests", params=params, headers=owner.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] == total
        assert len(page["items"]) == min(total, page["limit"])
        if first is not None:
            assert page["items"][0]["input"].startswith(first)

        async with database.transaction(Tenant(owner.organization_id)) as session:
            reads = await rows_handled(session, seen, "tests", "test_set_members")
        assert reads
        for handled, sql in reads:
            assert handled <= LINEAR, f"{handled} rows for {params}: {sql}"
