"""`mode=sync` against a set whose latest version holds its cases still (nothing changed since
it was published, as after every run): the file's cases are hashed as a version would hash
them, and an equal hash answers the sync without reading the set's cases."""

from __future__ import annotations

import json
from typing import Any

import pytest

from database.test_sets import service
from tests.database.test_sets.test_import_statements import CASES as KINDS_OF_CASES
from tests.helpers import Account, create_project, create_test_set, register

SETS = "/api/v1/test-sets"
# Every kind of field a case holds (nested defaults left out: a tool call's `match`), then
# numbers that a JSON round trip could spell differently and text beyond ASCII.
CASES = [
    *KINDS_OF_CASES,
    {
        "input": "Reset my password ☃",
        "variables": {"ratio": 0.1, "tiny": 1e-7, "whole": 3.0, "large": 2**40},
        "metadata": {"nested": {"a": [1, None, "x", -2.5]}},
    },
    {"input": "plain"},
]
CONTENT = json.dumps(CASES).encode()


async def _sync(client, account: Account, test_set_id: str, content: bytes = CONTENT) -> dict:
    response = await _import(client, account, test_set_id, content)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _import(client, account: Account, test_set_id: str, content: bytes) -> Any:
    return await client.post(
        f"{SETS}/{test_set_id}/import",
        content=content,
        params={"mode": "sync", "format": "json"},
        headers={**account.headers, "Content-Type": "application/json"},
    )


async def _published_set(client) -> tuple[Account, dict]:
    """A set synced from CONTENT and published (version 1)."""
    account = await register(client)
    project = await create_project(client, account)
    test_set = await create_test_set(client, account, project["id"])
    assert (await _sync(client, account, test_set["id"]))["imported"] == len(CASES)
    published = await client.post(
        f"{SETS}/{test_set['id']}/versions", json={}, headers=account.headers
    )
    assert published.status_code == 201, published.text
    return account, test_set


def _reads_of_cases(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sets whose cases a sync reads from now on, one entry per read."""
    reads: list[str] = []
    read = service.current_cases

    async def counted(session: Any, test_set: Any) -> Any:
        reads.append(str(test_set.id))
        return await read(session, test_set)

    monkeypatch.setattr(service, "current_cases", counted)
    return reads


async def test_a_sync_of_the_published_cases_reads_none_of_them(client, monkeypatch):
    account, test_set = await _published_set(client)
    reads = _reads_of_cases(monkeypatch)

    synced = await _sync(client, account, test_set["id"])

    assert (synced["imported"], synced["changed"], synced["test_count"]) == (0, False, 6)
    assert reads == []
    read = await client.get(f"{SETS}/{test_set['id']}", headers=account.headers)
    assert read.json()["latest_version"] == 1


async def test_a_set_changed_since_its_version_is_compared_case_by_case(client, monkeypatch):
    """An edit moves the set past its version: the same file then differs from the set, which
    the comparison finds (the edited test is replaced, the others kept)."""
    account, test_set = await _published_set(client)
    listed = await client.get(
        "/api/v1/tests", params={"test_set_id": test_set["id"]}, headers=account.headers
    )
    plain = next(item for item in listed.json()["items"] if item["input"] == "plain")
    edited = await client.patch(
        f"/api/v1/tests/{plain['id']}", json={"input": "edited"}, headers=account.headers
    )
    assert edited.status_code == 200, edited.text
    reads = _reads_of_cases(monkeypatch)

    synced = await _sync(client, account, test_set["id"])

    assert (synced["imported"], synced["changed"], synced["test_count"]) == (1, True, 6)
    assert reads == [test_set["id"]]
    again = await client.get(
        "/api/v1/tests", params={"test_set_id": test_set["id"]}, headers=account.headers
    )
    assert sorted(item["input"] or "" for item in again.json()["items"]) == [
        "",
        "Hello",
        "How do I reset my password?",
        "No tools",
        "Reset my password ☃",
        "plain",
    ]


async def test_another_file_against_the_published_cases_is_written(client, monkeypatch):
    account, test_set = await _published_set(client)
    other = json.dumps([*CASES[:-1], {"input": "plain", "tags": ["new"]}]).encode()

    reads = _reads_of_cases(monkeypatch)

    synced = await _sync(client, account, test_set["id"], other)
    assert (synced["imported"], synced["changed"], synced["test_count"]) == (1, True, 6)
    # The set is now at a revision no version holds: the same file is compared case by case.
    again = await _sync(client, account, test_set["id"], other)
    assert (again["imported"], again["changed"]) == (0, False)
    assert reads == [test_set["id"], test_set["id"]]


# Numbers as a file may spell them, and what PostgreSQL keeps of each (which the import stores
# from the start, so the file read again equals the set).
SPELLED = (
    b'[{"input": "numbers", "variables": {"a": 1e16, "b": -0.0, "c": 1.5e3, "d": 1.00e1,'
    b' "e": 25e-1, "f": 1.5e20, "g": 1e-400, "h": 0.1000, "i": 1.0,'
    b' "j": 10000000000000000.0, "k": 150000000000000000000.0}}]'
)
KEPT = {
    "a": 10**16,
    "b": 0.0,
    "c": 1500,
    "d": 10.0,
    "e": 2.5,
    "f": 15 * 10**19,
    "g": 0.0,
    "h": 0.1,
    "i": 1.0,
    # Written as the floats they are read as, which the service's JSON spells 1e16 and 1.5e20:
    "j": 10**16,
    "k": 15 * 10**19,
}


@pytest.mark.parametrize("published", [False, True], ids=["compared", "hashed"])
async def test_numbers_a_file_spells_its_own_way_sync_as_unchanged(client, published):
    account = await register(client)
    project = await create_project(client, account)
    test_set = await create_test_set(client, account, project["id"])
    assert (await _sync(client, account, test_set["id"], SPELLED))["imported"] == 1
    if published:
        versions = f"{SETS}/{test_set['id']}/versions"
        assert (await client.post(versions, json={}, headers=account.headers)).status_code == 201

    synced = await _sync(client, account, test_set["id"], SPELLED)

    assert (synced["imported"], synced["changed"]) == (0, False)
    listed = await client.get(
        "/api/v1/tests", params={"test_set_id": test_set["id"]}, headers=account.headers
    )
    variables = listed.json()["items"][0]["variables"]
    assert variables == KEPT
    assert [type(variables[key]) for key in "abcd"] == [int, float, int, float]
    assert str(variables["b"]) == "0.0"  # no negative zero


@pytest.mark.parametrize(
    ("number", "complaint"),
    [
        (b"NaN", "NaN is not a JSON number"),
        (b"-Infinity", "-Infinity is not a JSON number"),
        (b"2" + b"0" * 308 + b".5", "beyond the range of a JSON number"),  # a double's inf
    ],
    ids=["nan", "infinity", "past a double"],
)
async def test_numbers_the_database_cannot_keep_are_refused_by_line(client, number, complaint):
    account = await register(client)
    project = await create_project(client, account)
    test_set = await create_test_set(client, account, project["id"])
    content = b'[{"input": "a"},\n {"input": "b", "metadata": {"n": ' + number + b"}}]"
    response = await _import(client, account, test_set["id"], content)
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert error["line"] == 2 and complaint in error["message"]
