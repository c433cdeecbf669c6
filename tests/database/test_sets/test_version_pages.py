"""Publishing copies a set's cases a page at a time: the same version, positions and digest as
copying them at once, and a copy equal to the latest version leaves nothing behind."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from sqlalchemy import text

from database.tests import crud as test_crud
from tests.helpers import (
    Account,
    create_project,
    create_test,
    create_test_set,
    register,
    tenant_session,
)

SETS = "/api/v1/test-sets"


async def _publish(client: httpx.AsyncClient, account: Account, set_id: str, status: int) -> dict:
    response = await client.post(f"{SETS}/{set_id}/versions", headers=account.headers)
    assert response.status_code == status, response.text
    return response.json()


async def _cases(client: httpx.AsyncClient, account: Account, set_id: str, number: int) -> list:
    response = await client.get(
        f"{SETS}/{set_id}/versions/{number}/cases", params={"limit": 200}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_a_set_copied_in_pages_keeps_its_order_and_the_whole_list_digest(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(test_crud, "ROWS_PER_STATEMENT", 2)  # 7 cases: 4 pages
    owner = await register(client)
    project = await create_project(client, owner)
    inputs = ["Grüße, 東京", "b", "c", "d", "e", "f", "g"]
    tests = [(await create_test(client, owner, project["id"], input=i))["id"] for i in inputs]
    order = tests[3:] + tests[:3]
    test_set = await create_test_set(client, owner, project["id"], order)

    version = await _publish(client, owner, test_set["id"], 201)
    cases = await _cases(client, owner, test_set["id"], 1)
    assert [(c["position"], c["test_id"]) for c in cases] == list(enumerate(order))
    assert version["case_count"] == 7
    # The digest of the whole list at once, as versions published before were hashed.
    whole = json.dumps(
        [c["case"] for c in cases], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert version["content_hash"] == hashlib.sha256(whole.encode()).hexdigest()


async def test_a_change_undone_publishes_nothing_new(client: httpx.AsyncClient, database) -> None:
    owner = await register(client)
    project = await create_project(client, owner)
    a = (await create_test(client, owner, project["id"], input="a"))["id"]
    b = (await create_test(client, owner, project["id"], input="b"))["id"]
    test_set = await create_test_set(client, owner, project["id"], [a, b])
    first = await _publish(client, owner, test_set["id"], 201)
    url = f"{SETS}/{test_set['id']}/tests"
    for ids in ([b], [a, b]):  # changed, then back as it was
        changed = await client.put(url, json={"test_ids": ids}, headers=owner.headers)
        assert changed.status_code == 200, changed.text

    assert await _publish(client, owner, test_set["id"], 200) == first
    async with tenant_session(database, owner.organization_id) as session:
        versions = await session.scalar(
            text("SELECT count(*) FROM test_set_versions WHERE test_set_id = :id"),
            {"id": test_set["id"]},
        )
        copied = await session.scalar(
            text(
                "SELECT count(*) FROM test_set_version_cases c"
                " JOIN test_set_versions v ON v.id = c.version_id WHERE v.test_set_id = :id"
            ),
            {"id": test_set["id"]},
        )
    assert (versions, copied) == (1, 2)
