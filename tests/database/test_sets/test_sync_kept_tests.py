"""Which tests a sync keeps, adds and removes, and in what order: a case equal to one of the
set's tests keeps that test (duplicates take the set's tests in its order), the others become
new tests, the rest leave the set; and the file's order is the set's."""

from __future__ import annotations

import json
from typing import Any

from database.test_sets import sync_cases
from tests.helpers import Account, create_project, create_test_set, register

SETS = "/api/v1/test-sets"


async def _sync(client, account: Account, test_set_id: str, cases: list[dict[str, Any]]) -> dict:
    response = await client.post(
        f"{SETS}/{test_set_id}/import",
        content=json.dumps(cases).encode(),
        params={"mode": "sync", "format": "json"},
        headers={**account.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _members(client, account: Account, test_set_id: str) -> list[tuple[str, str]]:
    listed = await client.get(
        "/api/v1/tests",
        params={"test_set_id": test_set_id, "sort": "position", "limit": 100},
        headers=account.headers,
    )
    return [(item["id"], item["input"]) for item in listed.json()["items"]]


async def test_a_sync_keeps_equal_tests_in_the_files_order_across_pages(client, monkeypatch):
    monkeypatch.setattr(sync_cases, "PAGE_ROWS", 2)  # the set's cases read over three pages
    account = await register(client)
    project = await create_project(client, account)
    test_set = await create_test_set(client, account, project["id"])
    first = [{"input": name} for name in ["a", "b", "dup", "c", "dup", "gone"]]
    assert (await _sync(client, account, test_set["id"], first))["imported"] == 6
    before = await _members(client, account, test_set["id"])
    ids = {index: test_id for index, (test_id, _) in enumerate(before)}

    # Spelled otherwise but equal ("tags": [] is the default), moved, repeated and new.
    second: list[dict[str, Any]] = [
        {"input": "dup", "tags": []},
        {"input": "new"},
        {"input": "c"},
        {"input": "dup"},
        {"input": "dup"},
        {"input": "a"},
    ]
    synced = await _sync(client, account, test_set["id"], second)

    assert (synced["imported"], synced["test_count"], synced["changed"]) == (2, 6, True)
    after = await _members(client, account, test_set["id"])
    assert [name for _, name in after] == ["dup", "new", "c", "dup", "dup", "a"]
    kept = [test_id for test_id, _ in after]
    assert [kept[0], kept[2], kept[3], kept[5]] == [ids[2], ids[3], ids[4], ids[0]]
    assert not {kept[1], kept[4]} & set(ids.values())

    again = await _sync(client, account, test_set["id"], second)
    assert (again["imported"], again["changed"]) == (0, False)
    assert await _members(client, account, test_set["id"]) == after
