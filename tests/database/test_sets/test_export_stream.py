"""GET /test-sets/{id}/export streams a page at a time, byte for byte the document the
whole-set export wrote before (kept below as the reference)."""

from __future__ import annotations

import csv
import io
import json
import random
import string
import threading
import uuid
from typing import Any

import pytest

from database.core import Database, Tenant
from database.test_sets import crud, exports, service
from database.test_sets.crud import version_cases
from database.test_sets.streaming import PAGE_ROWS
from database.tests import crud as test_crud
from database.tests.schemas import TestCaseFields as Case
from tests.helpers import Account, create_project, create_test_set, register
from utils.csv_cells import guard_formula

CASES = 2 * PAGE_ROWS + 37
MEDIA = {"csv": "text/csv", "json": "application/json", "jsonl": "application/x-ndjson"}
COLUMNS = [
    "input",
    "expected_output",
    "context",
    "behavior",
    "category",
    "topic",
    "tags",
    "messages",
    "variables",
    "metadata",
    "expected_tool_calls",
    "tool_responses",
    "max_steps",
    "conversation",
]


def _reference(cases: list[Case], fmt: str) -> bytes:
    dumped = [case.model_dump(mode="json") for case in cases]
    if fmt == "json":
        return json.dumps(dumped, ensure_ascii=False, indent=2).encode()
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in dumped).encode()
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in dumped:
        writer.writerow([_cell(column, row.get(column)) for column in COLUMNS])
    return buffer.getvalue().encode()


def _cell(column: str, value: Any) -> str:
    if value is None or value == {} or (value == [] and column in COLUMNS[:10]):
        return ""
    return guard_formula(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def _jsonl(count: int) -> bytes:
    rows = []
    for i in range(count):
        row: dict[str, Any] = {"input": f'=case {i}, "quoted"\nline two', "tags": [f"t{i % 3}"]}
        if i % 5 == 0:
            row["metadata"] = {"n": i, "nested": {"text": "Zoë 🚀"}}
        if i % 7 == 0:
            row["context"] = ["first, passage", "-second"]
        rows.append(json.dumps(row, ensure_ascii=False))
    return ("\n".join(rows) + "\n").encode()


async def _stored_cases(database: Database, owner: Account, test_set_id: str) -> list:
    async with database.transaction(Tenant(owner.organization_id)) as session:
        tests = await crud.member_tests(session, uuid.UUID(test_set_id))
    stored = {"stored": True}
    return [Case.model_validate(test_crud.case_fields(t), context=stored) for t in tests]


async def _published_set(client: Any, count: int) -> tuple[Account, str]:
    """A new account's set of `count` imported cases, published as version 1."""
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    url = f"/api/v1/test-sets/{test_set['id']}"
    imported = await client.post(
        f"{url}/import",
        content=_jsonl(count),
        headers={**owner.headers, "Content-Type": "application/x-ndjson"},
    )
    assert imported.status_code == 201, imported.text
    published = await client.post(f"{url}/versions", headers=owner.headers)
    assert published.status_code == 201, published.text
    return owner, test_set["id"]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
async def test_sets_of_several_pages_export_as_they_always_did(client, database, fmt):
    owner, test_set_id = await _published_set(client, CASES)
    url = f"/api/v1/test-sets/{test_set_id}"
    # The current cases move on from the version: the last one leaves the set.
    page = await client.get(
        f"{url}/versions/1/cases", params={"offset": CASES - 1}, headers=owner.headers
    )
    last = page.json()["items"][0]
    removed = await client.delete(f"{url}/tests/{last['test_id']}", headers=owner.headers)
    assert removed.status_code == 204

    current = await client.get(f"{url}/export", params={"format": fmt}, headers=owner.headers)
    assert current.status_code == 200, current.text
    assert current.headers["content-type"].startswith(MEDIA[fmt])
    cases = await _stored_cases(database, owner, test_set_id)
    assert len(cases) == CASES - 1
    assert current.content == _reference(cases, fmt)
    inputs = [case.input for case in cases]
    assert inputs == [f'=case {i}, "quoted"\nline two' for i in range(CASES - 1)]

    version = await client.get(
        f"{url}/export", params={"format": fmt, "version": 1}, headers=owner.headers
    )
    assert version.status_code == 200, version.text
    assert version.headers["content-disposition"].endswith(f'-v1.{fmt}"')
    removed_case = Case.model_validate(last["case"], context={"stored": True})
    assert version.content == _reference([*cases, removed_case], fmt)


async def test_stored_cases_are_validated_off_the_event_loop(client, monkeypatch):
    """Validating a page of large stored cases took tens of milliseconds: it runs with the
    page's encoding in the worker thread, for the current cases and a version's."""
    owner, test_set_id = await _published_set(client, 3)
    url = f"/api/v1/test-sets/{test_set_id}"

    loop_thread = threading.get_ident()
    threads: list[int] = []
    validate = service._stored

    def recording(case: dict[str, Any]) -> Case:
        threads.append(threading.get_ident())
        return validate(case)

    monkeypatch.setattr(service, "_stored", recording)
    for params in ({"format": "jsonl"}, {"format": "jsonl", "version": 1}):
        exported = await client.get(f"{url}/export", params=params, headers=owner.headers)
        assert exported.status_code == 200, exported.text
        assert len(exported.content.splitlines()) == 3
    assert len(threads) == 6
    assert loop_thread not in threads


async def test_a_page_of_large_cases_ends_at_its_byte_budget(client, monkeypatch):
    """A page is built in memory: it takes no more cases once they hold PAGE_BYTES (stored),
    the first whatever its size, for the current cases and a version's alike."""
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    url = f"/api/v1/test-sets/{test_set['id']}"
    # Inputs of 900-1,500 random characters, and one of 5,000 past the budget that compresses
    # to a hundredth of that as stored: it is weighed as read, and the page it is in ends with
    # it.
    rng = random.Random(7)
    sizes = [rng.randrange(900, 1500) for _ in range(12)]
    inputs = ["".join(rng.choices(string.ascii_letters, k=size)) for size in sizes]
    sizes[5], inputs[5] = 5000, "ab" * 2500
    lines = "".join(json.dumps({"input": text}) + "\n" for text in inputs)
    imported = await client.post(
        f"{url}/import",
        content=lines.encode(),
        headers={**owner.headers, "Content-Type": "application/x-ndjson"},
    )
    assert imported.status_code == 201, imported.text
    assert (await client.post(f"{url}/versions", headers=owner.headers)).status_code == 201

    budget = 2500
    monkeypatch.setattr(exports, "PAGE_BYTES", budget)
    pages: list[list[int]] = []
    tests_in_order = crud.tests_in_order
    version_cases_after = version_cases.version_cases_after

    async def current_page(session: Any, test_ids: Any) -> Any:
        rows = await tests_in_order(session, test_ids)
        pages.append([len(row.input) for row in rows])
        return rows

    async def version_page(*args: Any, **kwargs: Any) -> Any:
        rows = await version_cases_after(*args, **kwargs)
        pages.append([len(row.case["input"]) for row in rows])
        return rows

    monkeypatch.setattr(crud, "tests_in_order", current_page)
    monkeypatch.setattr(version_cases, "version_cases_after", version_page)
    for params in ({"format": "jsonl"}, {"format": "jsonl", "version": 1}):
        pages.clear()
        exported = await client.get(f"{url}/export", params=params, headers=owner.headers)
        assert exported.status_code == 200, exported.text
        assert [json.loads(line)["input"] for line in exported.text.splitlines()] == inputs
        read = [page for page in pages if page]
        assert [size for page in read for size in page] == sizes
        assert len(read) >= 4  # 12 cases, where pages of rows alone would be one
        assert all(sum(page[:-1]) < budget for page in read), read
