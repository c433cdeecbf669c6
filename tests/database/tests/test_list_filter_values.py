"""The list's filters take what their columns store: a tag of at most 100 characters and a
label of at most 200, trimmed. A longer tag was cut to 100 by the cast of its parameter
(VARCHAR(100)[]), so a test matched a tag it does not have."""

from __future__ import annotations

from typing import Any

import httpx

from tests.helpers import Account, assert_problem, create_project, create_test, register

TESTS = "/api/v1/tests"


async def _list(client: httpx.AsyncClient, account: Account, **params: Any) -> httpx.Response:
    return await client.get(TESTS, params=params, headers=account.headers)


async def test_a_tag_longer_than_a_stored_tag_is_refused_not_cut(client):
    owner = await register(client)
    project = await create_project(client, owner)
    await create_test(client, owner, project["id"], tags=["a" * 100])

    at_limit = await _list(client, owner, project_id=project["id"], tag="a" * 100)
    assert at_limit.json()["total"] == 1, at_limit.text
    longer = await _list(client, owner, project_id=project["id"], tag="a" * 100 + "-else")
    assert_problem(longer, 422, field="query.tag.0")
    second = await _list(client, owner, project_id=project["id"], tag=["a" * 100, "b" * 101])
    assert_problem(second, 422, field="query.tag.1")


async def test_filters_are_trimmed_as_stored_values_are(client):
    owner = await register(client)
    project = await create_project(client, owner)
    await create_test(client, owner, project["id"], tags=[" smoke "], behavior=" answer ")

    for params in ({"tag": " smoke"}, {"behavior": "answer "}, {"tag": "smoke\t"}):
        found = await _list(client, owner, project_id=project["id"], **params)
        assert found.status_code == 200, found.text
        assert found.json()["total"] == 1, params


async def test_a_label_filter_longer_than_its_column_is_refused(client):
    owner = await register(client)
    for name in ("behavior", "category", "topic"):
        response = await _list(client, owner, **{name: "x" * 201})
        assert_problem(response, 422, field=f"query.{name}")


def test_the_filters_bounds_are_documented(app):
    parameters = {
        parameter["name"]: parameter["schema"]
        for parameter in app.openapi()["paths"][TESTS]["get"]["parameters"]
    }
    assert parameters["tag"]["items"]["maxLength"] == 100
    assert parameters["behavior"]["anyOf"][0]["maxLength"] == 200
