"""A test's free-form objects (variables, metadata) and an import's width are bounded: each
limit is a 422 naming the field, before anything is stored."""

from __future__ import annotations

import pytest

from database.test_sets.io import MAX_COLUMNS
from database.tests.schemas import MAX_FREE_FORM_BYTES, MAX_FREE_FORM_DEPTH, MAX_FREE_FORM_KEYS
from tests.helpers import assert_problem, create_project, create_test_set, register


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
