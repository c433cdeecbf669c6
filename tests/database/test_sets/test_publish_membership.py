"""A publish whose cases read as the latest version's, but are of other tests (one deleted and
made again, or equal tests reordered), makes a new version: the content hash covers the cases
alone, and the latest version would name tests the set no longer holds (or in another order),
so runs of the set would pin it and their results carry no test, or the wrong one."""

from __future__ import annotations

import httpx

from tests.helpers import Account, create_project, create_test, create_test_set, register

SETS = "/api/v1/test-sets"


async def _publish(client: httpx.AsyncClient, account: Account, set_id: str, status: int) -> dict:
    response = await client.post(f"{SETS}/{set_id}/versions", headers=account.headers)
    assert response.status_code == status, response.text
    return response.json()


async def _tests_of(
    client: httpx.AsyncClient, account: Account, set_id: str, number: int
) -> list[str | None]:
    response = await client.get(f"{SETS}/{set_id}/versions/{number}/cases", headers=account.headers)
    assert response.status_code == 200, response.text
    return [case["test_id"] for case in response.json()["items"]]


async def test_an_identical_test_made_again_is_a_new_version(client):
    owner = await register(client)
    project = await create_project(client, owner)
    first = await create_test(client, owner, project["id"], input="What is 2+2?")
    test_set = await create_test_set(client, owner, project["id"], [first["id"]])
    v1 = await _publish(client, owner, test_set["id"], 201)

    deleted = await client.delete(f"/api/v1/tests/{first['id']}", headers=owner.headers)
    assert deleted.status_code == 204, deleted.text
    again = await create_test(client, owner, project["id"], input="What is 2+2?")
    added = await client.post(
        f"{SETS}/{test_set['id']}/tests", json={"test_ids": [again["id"]]}, headers=owner.headers
    )
    assert added.status_code in (200, 201), added.text

    v2 = await _publish(client, owner, test_set["id"], 201)
    assert v2["number"] == 2
    assert v2["content_hash"] == v1["content_hash"]  # the same cases, of another test
    assert await _tests_of(client, owner, test_set["id"], 2) == [again["id"]]
    assert await _publish(client, owner, test_set["id"], 200) == v2


async def test_equal_tests_reordered_are_a_new_version(client):
    owner = await register(client)
    project = await create_project(client, owner)
    a = (await create_test(client, owner, project["id"], input="same"))["id"]
    b = (await create_test(client, owner, project["id"], input="same"))["id"]
    test_set = await create_test_set(client, owner, project["id"], [a, b])
    await _publish(client, owner, test_set["id"], 201)

    reordered = await client.put(
        f"{SETS}/{test_set['id']}/tests", json={"test_ids": [b, a]}, headers=owner.headers
    )
    assert reordered.status_code == 200, reordered.text

    v2 = await _publish(client, owner, test_set["id"], 201)
    assert v2["number"] == 2
    assert await _tests_of(client, owner, test_set["id"], 1) == [a, b]
    assert await _tests_of(client, owner, test_set["id"], 2) == [b, a]
