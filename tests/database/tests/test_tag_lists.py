"""A tag given twice is one tag: a test's tags are a set kept in the order first given."""

from __future__ import annotations

from tests.helpers import create_project, register

TESTS = "/api/v1/tests"


async def test_a_tag_given_twice_is_kept_once_in_the_order_first_given(client):
    owner = await register(client)
    project = await create_project(client, owner)
    body = {"project_id": project["id"], "input": "x", "tags": ["b", "a", " b ", "a", "c"]}
    created = await client.post(TESTS, json=body, headers=owner.headers)
    assert created.status_code == 201, created.text
    assert created.json()["tags"] == ["b", "a", "c"]
    edited = await client.patch(
        f"{TESTS}/{created.json()['id']}", json={"tags": ["z", "z"]}, headers=owner.headers
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["tags"] == ["z"]
