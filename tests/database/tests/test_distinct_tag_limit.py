"""A test's tag limit counts distinct tags (a tag given twice is one tag); the list as sent
has a generous bound of its own."""

from __future__ import annotations

from database.tests.schemas import MAX_TAGS, MAX_TAGS_AS_SENT
from tests.helpers import assert_problem, create_project, register

TESTS = "/api/v1/tests"


async def test_the_tag_limit_counts_distinct_tags(client):
    owner = await register(client)
    project = await create_project(client, owner)
    repeated = {"project_id": project["id"], "input": "x", "tags": ["a"] * (MAX_TAGS + 1)}
    created = await client.post(TESTS, json=repeated, headers=owner.headers)
    assert created.status_code == 201, created.text
    assert created.json()["tags"] == ["a"]
    distinct = [f"t{i}" for i in range(MAX_TAGS + 1)]
    refused = await client.post(TESTS, json={**repeated, "tags": distinct}, headers=owner.headers)
    assert_problem(refused, 422, field="body.tags")
    url = f"{TESTS}/{created.json()['id']}"
    edited = await client.patch(url, json={"tags": ["b"] * 60 + ["c"]}, headers=owner.headers)
    assert edited.status_code == 200, edited.text
    assert edited.json()["tags"] == ["b", "c"]
    refused = await client.patch(url, json={"tags": distinct}, headers=owner.headers)
    assert_problem(refused, 422, field="body.tags")


async def test_the_list_as_sent_is_bounded_too(client):
    owner = await register(client)
    project = await create_project(client, owner)
    body = {"project_id": project["id"], "input": "x", "tags": ["a"] * (MAX_TAGS_AS_SENT + 1)}
    refused = await client.post(TESTS, json=body, headers=owner.headers)
    assert_problem(refused, 422, field="body.tags")
