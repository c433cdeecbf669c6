"""A file of no cases: a sync of it empties the set ("hold exactly the file's cases"), so an
empty set's export imports back; an append of it is still refused. An empty file (no bytes,
or only blanks) is refused even by a sync: a CI step that wrote nothing must not empty a set."""

from __future__ import annotations

import pytest

from tests.helpers import Account, assert_problem, create_project, create_test_set, register

SETS = "/api/v1/test-sets"
NO_CASES = {"csv": b"input,expected_output\r\n", "json": b"[]"}


async def _set_of_two(client) -> tuple[Account, str, str]:
    """An account, its project and a set of two tests there."""
    account = await register(client)
    project = (await create_project(client, account))["id"]
    test_set = (await create_test_set(client, account, project))["id"]
    filled = await _import(client, account, test_set, "json", b'[{"input": "a"}, {"input": "b"}]')
    assert filled.status_code == 201, filled.text
    return account, project, test_set


async def _import(client, account: Account, test_set_id: str, fmt: str, content: bytes, **params):
    return await client.post(
        f"{SETS}/{test_set_id}/import",
        content=content,
        params={"format": fmt, **params},
        headers={**account.headers, "Content-Type": "application/octet-stream"},
    )


@pytest.mark.parametrize("fmt", ["csv", "json"])
async def test_a_sync_of_no_cases_empties_the_set(client, fmt):
    account, _, test_set_id = await _set_of_two(client)

    synced = await _import(client, account, test_set_id, fmt, NO_CASES[fmt], mode="sync")

    assert synced.status_code == 201, synced.text
    assert synced.json() | {"metrics": [], "unmapped": [], "notes": []} == {
        "imported": 0,
        "test_count": 0,
        "changed": True,
        "metrics": [],
        "unmapped": [],
        "notes": [],
    }
    again = await _import(client, account, test_set_id, fmt, NO_CASES[fmt], mode="sync")
    assert (again.json()["test_count"], again.json()["changed"]) == (0, False)


@pytest.mark.parametrize("fmt", ["csv", "json"])
async def test_an_empty_sets_export_syncs_back(client, fmt):
    account, project, test_set_id = await _set_of_two(client)
    empty = (await create_test_set(client, account, project))["id"]
    exported = await client.get(
        f"{SETS}/{empty}/export", params={"format": fmt}, headers=account.headers
    )
    assert exported.status_code == 200, exported.text

    synced = await _import(client, account, test_set_id, fmt, exported.content, mode="sync")

    assert synced.status_code == 201, synced.text
    assert (synced.json()["test_count"], synced.json()["changed"]) == (0, True)


@pytest.mark.parametrize("fmt", ["csv", "json"])
async def test_an_append_of_no_cases_is_refused(client, fmt):
    account, _, test_set_id = await _set_of_two(client)

    refused = await _import(client, account, test_set_id, fmt, NO_CASES[fmt])

    assert assert_problem(refused, 422)["detail"] == "The file contains no test cases"
    read = await client.get(f"{SETS}/{test_set_id}", headers=account.headers)
    assert read.json()["test_count"] == 2


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
@pytest.mark.parametrize("content", [b"", b" \r\n\n"], ids=["no bytes", "blanks"])
async def test_an_empty_file_is_refused_even_by_a_sync(client, fmt, content):
    account, _, test_set_id = await _set_of_two(client)

    refused = await _import(client, account, test_set_id, fmt, content, mode="sync")

    problem = assert_problem(refused, 422)
    assert problem["detail"].startswith("The file is empty"), problem
    read = await client.get(f"{SETS}/{test_set_id}", headers=account.headers)
    assert read.json()["test_count"] == 2
