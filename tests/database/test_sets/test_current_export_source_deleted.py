"""An export of a set's current cases whose tests are deleted while it streams (with their
project, or one alone): the pages come up short, and the document must not end as if they
were whole. It ends as an error (the response without its last chunk), as a version's does."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from database.core import Tenant
from database.test_sets import crud
from database.test_sets import service as test_set_service
from database.test_sets.io import Format
from database.test_sets.streaming import PAGE_ROWS, GoneMidway
from tests.helpers import Account, create_project, create_test_set, register, remove_account
from utils.auth import Principal, Role

pytestmark = pytest.mark.slow
CASES = 2 * PAGE_ROWS + 10


@pytest.fixture
async def owner(committed_client, owner_engine) -> AsyncIterator[Account]:
    account = await register(committed_client)
    yield account
    await remove_account(owner_engine, account)


async def _set(client, owner: Account) -> tuple[str, str]:
    """A project's set of CASES cases: the project's id and the set's."""
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    lines = "".join(json.dumps({"input": f"question {i}"}) + "\n" for i in range(CASES))
    imported = await client.post(
        f"/api/v1/test-sets/{test_set['id']}/import",
        content=lines.encode(),
        headers={**owner.headers, "Content-Type": "application/x-ndjson"},
    )
    assert imported.status_code == 201, imported.text
    return project["id"], test_set["id"]


async def _export(database, owner: Account, test_set_id: str, fmt: Format) -> AsyncIterator[bytes]:
    principal = Principal(owner.organization_id, Role.viewer, owner.user_id)
    async with database.transaction(Tenant(owner.organization_id)) as session:
        test_set = await crud.get_test_set(session, uuid.UUID(test_set_id))
        assert test_set is not None
        return await test_set_service.export(session, principal, test_set, fmt, version_number=None)


async def _read_while_deleting(
    chunks: AsyncIterator[bytes], delete: Callable[[], Awaitable[None]]
) -> bytes:
    """Reads the document; once a page has left, deletes (some of) its source."""
    received, deleted = [], False
    async for chunk in chunks:
        received.append(chunk)
        if not deleted and len(chunk) > 1000:
            await delete()
            deleted = True
    return b"".join(received)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
async def test_a_project_deleted_during_a_current_export_ends_it_as_an_error(
    committed_client, committed_database, owner, fmt
):
    project_id, test_set_id = await _set(committed_client, owner)
    chunks = await _export(committed_database, owner, test_set_id, fmt)

    async def delete() -> None:
        url = f"/api/v1/projects/{project_id}"
        assert (await committed_client.delete(url, headers=owner.headers)).status_code == 204

    with pytest.raises(GoneMidway, match="test set was deleted"):
        await _read_while_deleting(chunks, delete)


async def test_a_test_deleted_during_a_current_export_ends_it_as_an_error(
    committed_client, committed_database, owner
):
    """The file would be the set neither as it was when the export began nor as it is."""
    _, test_set_id = await _set(committed_client, owner)
    async with committed_database.transaction(Tenant(owner.organization_id)) as session:
        last = (await crud.member_ids(session, uuid.UUID(test_set_id)))[-1]
    chunks = await _export(committed_database, owner, test_set_id, "jsonl")

    async def delete() -> None:
        url = f"/api/v1/tests/{last}"
        assert (await committed_client.delete(url, headers=owner.headers)).status_code == 204

    with pytest.raises(GoneMidway, match="a test of the set was deleted"):
        await _read_while_deleting(chunks, delete)


async def test_a_test_taken_out_of_the_set_during_a_current_export_is_still_sent(
    committed_client, committed_database, owner
):
    """Still there, it is sent: the document is the set as it was when the export began."""
    _, test_set_id = await _set(committed_client, owner)
    async with committed_database.transaction(Tenant(owner.organization_id)) as session:
        last = (await crud.member_ids(session, uuid.UUID(test_set_id)))[-1]
    chunks = await _export(committed_database, owner, test_set_id, "jsonl")

    async def take_out() -> None:
        url = f"/api/v1/test-sets/{test_set_id}/tests/{last}"
        assert (await committed_client.delete(url, headers=owner.headers)).status_code == 204

    body = await _read_while_deleting(chunks, take_out)
    assert body.count(b"\n") == CASES
