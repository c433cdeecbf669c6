"""A request about a few of a set's tests reads those alone, however large the set: adding one
id read the whole membership (a row per member, on the event loop, under the set's lock), and
a page of the set's tests rebuilt its whole order as a list of ids. Publish and export, which
need the whole order, read it as one value made into ids a page at a time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from database.core import Database
from database.test_sets import exports
from database.test_sets.crud import members
from database.tests import crud as test_crud
from tests.helpers import Account, create_project, create_test, create_test_set, register

SETS, TESTS = "/api/v1/test-sets", "/api/v1/tests"
MEMBERS = 300
# Values a statement about a few tests may move: far below the set's size.
FEW = 10


@dataclass(frozen=True)
class Read:
    sql: str
    rows: int  # rows returned (-1 for a statement that returns none)
    sent: int  # elements of the arrays sent as parameters
    returned: int  # elements of the arrays returned (a set's whole order as one array)

    @property
    def values(self) -> int:
        return max(self.rows, 0) + self.sent + self.returned


def _elements(values: Any) -> int:
    return sum(len(value) for value in values if isinstance(value, list | tuple))


@contextmanager
def reads(database: Database) -> Iterator[list[Read]]:
    """Each statement the database's engine runs meanwhile, with the rows it returned and the
    elements of the arrays it was sent and returned."""
    seen: list[Read] = []

    def record(_conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent = parameters.values() if isinstance(parameters, dict) else parameters or ()
        # The asyncpg adapter's cursor holds the rows it fetched, not yet handed on.
        returned = sum(_elements(row) for row in cursor._rows)
        seen.append(Read(statement, cursor.rowcount, _elements(sent), returned))

    engine = database.engine.sync_engine
    event.listen(engine, "after_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "after_cursor_execute", record)


@pytest.fixture
async def large_set(client: httpx.AsyncClient) -> tuple[Account, str, str, list[str]]:
    """An account, its project, a set of MEMBERS tests (every tenth of topic "ten") and their
    ids in the set's order."""
    owner = await register(client)
    project = (await create_project(client, owner))["id"]
    test_set = await create_test_set(client, owner, project)
    created = await client.post(
        f"{TESTS}/bulk",
        json={
            "project_id": project,
            "test_set_id": test_set["id"],
            "tests": [
                {"input": f"case {i}", "topic": "ten" if i % 10 == 0 else "other"}
                for i in range(MEMBERS)
            ],
        },
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    return owner, project, test_set["id"], created.json()["ids"]


def _assert_few(seen: list[Read], what: str) -> None:
    assert seen
    most = max(seen, key=lambda read: read.values)
    assert most.values <= FEW, f"{what}: {most.values} values moved by {most.sql}"


async def test_adding_ids_reads_only_the_ids_sent(client, database, large_set):
    owner, project, test_set_id, ids = large_set
    fresh = [(await create_test(client, owner, project))["id"] for _ in range(2)]
    path = f"{SETS}/{test_set_id}/tests"

    with reads(database) as seen:
        again = await client.post(path, json={"test_ids": [ids[5]]}, headers=owner.headers)
    assert again.status_code == 200, again.text
    assert again.json() == {"test_count": MEMBERS, "added": 0}
    _assert_few(seen, "adding a present id")

    sent = [fresh[1], ids[7], fresh[0], fresh[1]]
    with reads(database) as seen:
        added = await client.post(path, json={"test_ids": sent}, headers=owner.headers)
    assert added.status_code == 200, added.text
    assert added.json() == {"test_count": MEMBERS + 2, "added": 2}
    _assert_few(seen, "adding new ids")

    last = await client.get(
        TESTS,
        params={"test_set_id": test_set_id, "sort": "position", "offset": MEMBERS - 1},
        headers=owner.headers,
    )
    # duplicates skipped, the order sent kept, after every member
    assert [item["id"] for item in last.json()["items"]] == [ids[-1], fresh[1], fresh[0]]


async def test_bulk_creating_into_a_large_set_reads_only_the_new_tests(client, database, large_set):
    owner, project, test_set_id, _ = large_set
    body = {"project_id": project, "test_set_id": test_set_id, "tests": [{"input": "one more"}]}
    with reads(database) as seen:
        created = await client.post(f"{TESTS}/bulk", json=body, headers=owner.headers)
    assert created.status_code == 201, created.text
    _assert_few(seen, "bulk creating into the set")


@pytest.mark.parametrize(
    ("params", "total", "first"),
    [
        ({"sort": "position", "offset": 200}, MEMBERS, 200),
        ({"sort": "position", "topic": "ten", "offset": 20}, MEMBERS // 10, 200),
        ({"sort": "-created_at"}, MEMBERS, MEMBERS - 1),
        ({"sort": "created_at", "topic": "ten", "offset": 3}, MEMBERS // 10, 30),
    ],
)
async def test_a_page_of_a_set_reads_only_that_page(
    client, database, large_set, params, total, first
):
    owner, _, test_set_id, ids = large_set
    with reads(database) as seen:
        page = await client.get(
            TESTS, params={"test_set_id": test_set_id, "limit": 2, **params}, headers=owner.headers
        )
    assert page.status_code == 200, page.text
    assert page.json()["total"] == total
    assert page.json()["items"][0]["id"] == ids[first]
    _assert_few(seen, f"a page of {params}")


async def test_publishing_reads_the_order_as_one_value_made_into_ids_a_page_at_a_time(
    client, database, large_set, monkeypatch: pytest.MonkeyPatch
):
    owner, _, test_set_id, _ = large_set
    monkeypatch.setattr(test_crud, "ROWS_PER_STATEMENT", 100)  # 300 members: 3 pages
    made = _made_ids(monkeypatch)
    with reads(database) as seen:
        published = await client.post(f"{SETS}/{test_set_id}/versions", headers=owner.headers)
    assert published.status_code == 201, published.text
    assert published.json()["case_count"] == MEMBERS
    _assert_membership_read_once(seen)
    assert made == [100, 100, 100]


async def test_exporting_reads_the_order_as_one_value_made_into_ids_a_page_at_a_time(
    client, database, large_set, monkeypatch: pytest.MonkeyPatch
):
    owner, _, test_set_id, _ = large_set
    monkeypatch.setattr(exports, "PAGE_ROWS", 100)  # 300 members: 3 pages
    made = _made_ids(monkeypatch)
    with reads(database) as seen:
        exported = await client.get(
            f"{SETS}/{test_set_id}/export", params={"format": "jsonl"}, headers=owner.headers
        )
    assert exported.status_code == 200, exported.text
    lines = exported.text.splitlines()
    assert len(lines) == MEMBERS and '"case 0"' in lines[0] and '"case 299"' in lines[-1]
    _assert_membership_read_once(seen)
    assert made == [100, 100, 100]


def _made_ids(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many ids each making of a set's packed order made."""
    made: list[int] = []
    unpacked = members._unpacked

    def recorded(packed: bytes) -> list[uuid.UUID]:
        made.append(len(packed) // 16)
        return unpacked(packed)

    monkeypatch.setattr(members, "_unpacked", recorded)
    return made


def _assert_membership_read_once(seen: list[Read]) -> None:
    membership = [read for read in seen if "FROM test_set_members" in read.sql]
    assert len(membership) == 1, [read.sql for read in membership]
    assert membership[0].rows == 1
