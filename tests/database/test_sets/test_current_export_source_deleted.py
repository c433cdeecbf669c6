"""An export of a set's current cases whose tests are deleted while it streams (with their
project, or one alone): the pages come up short, and the document must not end as if they
were whole. It ends as an error (the response without its last chunk), as a version's does."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest

from database.core import Tenant
from database.test_sets import crud
from database.test_sets import service as test_set_service
from database.test_sets.io import Format
from database.test_sets.streaming import PAGE_ROWS, GoneMidway
from tests.helpers import Account, create_project, create_test_set, read_while_deleting
from utils.auth import Principal, Role

pytestmark = pytest.mark.slow
CASES = 2 * PAGE_ROWS + 10


async def _set(client, committed_owner: Account) -> tuple[str, str]:
    """A project's set of CASES cases: the project's id and the set's."""
    project = await create_project(client, committed_owner)
    test_set = await create_test_set(client, committed_owner, project["id"])
    lines = "".join(json.dumps({"input": f"question {i}"}) + "\n" for i in range(CASES))
    imported = await client.post(
        f"/api/v1/test-sets/{test_set['id']}/import",
        content=lines.encode(),
        headers={**committed_owner.headers, "Content-Type": "application/x-ndjson"},
    )
    assert imported.status_code == 201, imported.text
    return project["id"], test_set["id"]


async def _export(
    database, committed_owner: Account, test_set_id: str, fmt: Format
) -> AsyncIterator[bytes]:
    principal = Principal(committed_owner.organization_id, Role.viewer, committed_owner.user_id)
    async with database.transaction(Tenant(committed_owner.organization_id)) as session:
        test_set = await crud.get_test_set(session, uuid.UUID(test_set_id))
        assert test_set is not None
        return await test_set_service.export(session, principal, test_set, fmt, version_number=None)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
async def test_a_project_deleted_during_a_current_export_ends_it_as_an_error(
    committed_client, committed_database, committed_owner, fmt
):
    project_id, test_set_id = await _set(committed_client, committed_owner)
    chunks = await _export(committed_database, committed_owner, test_set_id, fmt)

    async def delete() -> None:
        url = f"/api/v1/projects/{project_id}"
        assert (
            await committed_client.delete(url, headers=committed_owner.headers)
        ).status_code == 204

    with pytest.raises(GoneMidway, match="test set was deleted"):
        await read_while_deleting(chunks, delete)


async def test_a_test_deleted_during_a_current_export_ends_it_as_an_error(
    committed_client, committed_database, committed_owner
):
    """The file would be the set neither as it was when the export began nor as it is."""
    _, test_set_id = await _set(committed_client, committed_owner)
    async with committed_database.transaction(Tenant(committed_owner.organization_id)) as session:
        last = (await crud.member_ids(session, uuid.UUID(test_set_id)))[-1]
    chunks = await _export(committed_database, committed_owner, test_set_id, "jsonl")

    async def delete() -> None:
        url = f"/api/v1/tests/{last}"
        assert (
            await committed_client.delete(url, headers=committed_owner.headers)
        ).status_code == 204

    with pytest.raises(GoneMidway, match="a test of the set was deleted"):
        await read_while_deleting(chunks, delete)


async def test_a_test_taken_out_of_the_set_during_a_current_export_is_still_sent(
    committed_client, committed_database, committed_owner
):
    """Still there, it is sent: the document is the set as it was when the export began."""
    _, test_set_id = await _set(committed_client, committed_owner)
    async with committed_database.transaction(Tenant(committed_owner.organization_id)) as session:
        last = (await crud.member_ids(session, uuid.UUID(test_set_id)))[-1]
    chunks = await _export(committed_database, committed_owner, test_set_id, "jsonl")

    async def take_out() -> None:
        url = f"/api/v1/test-sets/{test_set_id}/tests/{last}"
        assert (
            await committed_client.delete(url, headers=committed_owner.headers)
        ).status_code == 204

    body = await read_while_deleting(chunks, take_out)
    assert body.count(b"\n") == CASES
