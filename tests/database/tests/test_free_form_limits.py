"""A test's free-form objects (variables, metadata) and an import's width are bounded: each
limit is a 422 naming the field, before anything is stored."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from database.test_sets.io import MAX_COLUMNS
from database.tests.models import TestCase
from database.tests.schemas import MAX_FREE_FORM_BYTES, MAX_FREE_FORM_DEPTH, MAX_FREE_FORM_KEYS
from tests.helpers import (
    assert_problem,
    create_project,
    create_test_set,
    register,
    tenant_session,
)


def _nested(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("variables", {f"k{i}": i for i in range(MAX_FREE_FORM_KEYS + 1)}),
        ("metadata", {"big": "x" * (MAX_FREE_FORM_BYTES + 1)}),
        ("metadata", _nested(MAX_FREE_FORM_DEPTH + 1)),
        ("variables", {"list": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}),
    ],
)
async def test_oversized_free_form_objects_are_refused(client, field, value):
    owner = await register(client)
    project = await create_project(client, owner)
    body = {"project_id": project["id"], "input": "q", field: value}
    response = await client.post("/api/v1/tests", json=body, headers=owner.headers)
    assert_problem(response, 422, field=field)
    at_limit = {"project_id": project["id"], "input": "q", field: _nested(MAX_FREE_FORM_DEPTH)}
    accepted = await client.post("/api/v1/tests", json=at_limit, headers=owner.headers)
    assert accepted.status_code == 201, accepted.text


async def test_a_csv_import_wider_than_the_limit_is_refused_by_its_header(client):
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project_id=project["id"])
    header = ",".join(["input", *(f"c{i}" for i in range(MAX_COLUMNS))])
    response = await client.post(
        f"/api/v1/test-sets/{test_set['id']}/import",
        content=(header + "\nq" + "," * MAX_COLUMNS + "\n").encode(),
        headers={**owner.headers, "content-type": "text/csv"},
    )
    body = assert_problem(response, 422)
    assert body["errors"][0]["line"] == 1
    assert f"at most {MAX_COLUMNS}" in body["errors"][0]["message"]


async def test_tests_stored_before_the_limits_still_export(client, database):
    """The limits judge what is sent, not what was stored before they existed."""
    owner = await register(client)
    project = await create_project(client, owner)
    created = await client.post(
        "/api/v1/tests",
        json={"project_id": project["id"], "input": "q"},
        headers=owner.headers,
    )
    test_set = await create_test_set(
        client, owner, project_id=project["id"], test_ids=[created.json()["id"]]
    )
    wide = {f"column {i}": "x" for i in range(MAX_FREE_FORM_KEYS * 2)}
    async with tenant_session(database, owner.organization_id) as session:
        await session.execute(
            update(TestCase).where(TestCase.id == created.json()["id"]).values(meta=wide)
        )
    exported = await client.get(
        f"/api/v1/test-sets/{test_set['id']}/export",
        params={"format": "json"},
        headers=owner.headers,
    )
    assert exported.status_code == 200, exported.text
    assert len(exported.json()[0]["metadata"]) == MAX_FREE_FORM_KEYS * 2
