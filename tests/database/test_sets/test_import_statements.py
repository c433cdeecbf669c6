"""Imports write set-based: a statement for thousands of rows, so the set's revision moves once
per statement, not once per case; and a failure anywhere leaves nothing written."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from database.core import Database
from database.test_sets import service
from database.tests import crud as test_crud
from tests.helpers import (
    Account,
    assert_problem,
    create_project,
    create_test,
    create_test_set,
    register,
    statements_sent,
    tenant_session,
)
from utils.auth import Principal, Role

SETS = "/api/v1/test-sets"


def _csv(rows: int, *, bad_last_row: bool = False) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["input", "expected_output", "topic", "tags"])
    for i in range(rows):
        writer.writerow([f"Case {i}", str(i), f"topic {i % 7}", "a|b"])
    if bad_last_row:
        writer.writerow(["", "no input at all", "", ""])
    return buffer.getvalue().encode()


async def _state(database: Database, account: Account, test_set_id: str) -> dict[str, int]:
    """The set's content revision, its member count and the organization's test count."""
    async with tenant_session(database, account.organization_id) as session:
        row = await session.execute(
            text(
                "SELECT (SELECT content_revision FROM test_sets WHERE id = :id),"
                " (SELECT count(*) FROM test_set_members WHERE test_set_id = :id),"
                " (SELECT count(*) FROM tests)"
            ),
            {"id": test_set_id},
        )
        revision, members, tests = row.one()
    return {"revision": revision, "members": members, "tests": tests}


async def _import(client, account: Account, test_set_id: str, content: bytes, **params: str):
    return await client.post(
        f"{SETS}/{test_set_id}/import",
        content=content,
        params=params,
        headers={**account.headers, "Content-Type": "text/csv"},
    )


async def test_a_500_case_import_moves_the_revision_once(client, database):
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    before = await _state(database, owner, test_set["id"])

    response = await _import(client, owner, test_set["id"], _csv(500))

    assert response.status_code == 201, response.text
    assert response.json()["imported"] == 500
    after = await _state(database, owner, test_set["id"])
    assert after == {"revision": before["revision"] + 1, "members": 500, "tests": 500}

    # A sync that changes the set: its members are cleared and written again, a statement each.
    changed = await _import(client, owner, test_set["id"], _csv(499), mode="sync")
    assert changed.status_code == 201, changed.text
    assert changed.json()["imported"] == 0  # every case is one the set holds already
    synced = await _state(database, owner, test_set["id"])
    assert synced == {"revision": after["revision"] + 2, "members": 499, "tests": 500}


async def test_an_import_failing_on_its_last_row_writes_nothing(client, database):
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    before = await _state(database, owner, test_set["id"])

    response = await _import(client, owner, test_set["id"], _csv(600, bad_last_row=True))

    body = assert_problem(response, 422)
    assert [error["line"] for error in body["errors"]] == [602]  # the header is line 1
    assert await _state(database, owner, test_set["id"]) == before


async def test_a_statement_failing_after_others_leaves_nothing_written(
    client, database, monkeypatch
):
    """The cases go in several statements; the last one fails in the database (a value the
    validation would have refused, passed here straight to the service) and takes the earlier
    statements' rows with it."""
    monkeypatch.setattr(test_crud, "ROWS_PER_STATEMENT", 100)
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    before = await _state(database, owner, test_set["id"])
    principal = Principal(organization_id=owner.organization_id, role=Role.owner)
    cases = [{"input": f"case {i}", "tags": ["ok"]} for i in range(450)]
    cases.append({"input": "last", "tags": ["x" * 101]})  # the column holds 100 characters

    with pytest.raises(DBAPIError, match="too long"):
        async with tenant_session(database, owner.organization_id) as session:
            locked = await service.get_test_set_or_404(
                session, uuid.UUID(test_set["id"]), for_update=True
            )
            await service.write_cases(session, principal, locked, cases, mode="append")

    assert await _state(database, owner, test_set["id"]) == before


async def test_cases_larger_than_their_file_are_written_a_few_megabytes_a_statement(
    client, database
):
    """Aliases let a 50 KB file stand for 31 MB of cases. Encoding and sending one statement
    holds the event loop: the 1,000 cases went as one 31 MB document, a third of a second in
    which no other request moved. Each statement now carries a few megabytes."""
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    big = "x" * 15_500
    config = f"x: &s {big}\ntests:\n" + "  - vars: {a: *s, b: *s}\n" * 1000
    with statements_sent(database, _longest_text) as sizes:
        response = await client.post(
            f"{SETS}/{test_set['id']}/import",
            params={"format": "promptfoo"},
            files=[("file", ("promptfooconfig.yaml", config.encode()))],
            headers=owner.headers,
        )
    assert response.status_code == 201, response.text
    assert response.json()["imported"] == 1000
    inserts = [size for statement, size in sizes if statement.startswith("\nINSERT INTO tests")]
    assert len(inserts) >= 7 and max(inserts) <= test_crud.MAX_STATEMENT_CHARS
    async with tenant_session(database, owner.organization_id) as session:
        stored = await session.execute(
            text("SELECT count(*), min(length(variables ->> 'b')) FROM tests")
        )
        assert tuple(stored.one()) == (1000, len(big))


def _longest_text(statement: str, parameters: Any) -> tuple[str, int]:
    return statement, max((len(v) for v in parameters or () if isinstance(v, str)), default=0)


CASES = [
    {
        "input": "How do I reset my password?",
        "expected_output": "Settings, then Security",
        "context": ["Passwords are reset under Security"],
        "behavior": "answer",
        "category": "account",
        "topic": "passwords",
        "tags": ["smoke", "account"],
        "variables": {"product": "Assay", "n": 3},
        "metadata": {"source": "support", "nested": {"a": [1, None, "x"]}},
    },
    {
        "messages": [{"role": "user", "content": "Book a table for two"}],
        "expected_tool_calls": [{"name": "book_table", "arguments": {"people": 2}}],
        "tool_responses": [{"name": "book_table", "response": {"ok": True}}],
        "max_steps": 4,
    },
    {"input": "Hello", "conversation": {"turns": ["Hello", "Thanks"]}},
    # Empty, not absent: no call is expected, and the tools answer nothing.
    {"input": "No tools", "messages": [], "expected_tool_calls": [], "tool_responses": []},
]
# Every column but those that differ between any two rows (id, creation time).
_STORED = text(
    "SELECT to_jsonb(t) - 'id' - 'created_at' - 'updated_at' AS row,"
    " jsonb_typeof(messages) AS messages_type FROM tests AS t WHERE id = :id"
)


@pytest.mark.parametrize("case", CASES, ids=["answer", "agent", "conversation", "empty lists"])
async def test_an_imported_test_is_stored_as_one_created_alone(client, database, case):
    """The set-based insert writes each column as the ORM writes a single test (JSON nulls
    included), so filters, exports and snapshots cannot tell the two apart."""
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    alone = await create_test(client, owner, project["id"], **case)
    imported = await client.post(
        f"{SETS}/{test_set['id']}/import",
        content=json.dumps([case]).encode(),
        params={"format": "json"},
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert imported.status_code == 201, imported.text
    listed = await client.get(
        "/api/v1/tests", params={"test_set_id": test_set["id"]}, headers=owner.headers
    )
    (imported_id,) = [item["id"] for item in listed.json()["items"]]

    async with tenant_session(database, owner.organization_id) as session:
        rows = [
            (await session.execute(_STORED, {"id": test_id})).one()
            for test_id in (alone["id"], imported_id)
        ]
    assert rows[0] == rows[1]
    assert rows[0].row["project_id"] == project["id"]
