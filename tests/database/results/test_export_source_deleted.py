"""An export whose source is deleted while it streams (its run, or the test set version it
reads, with their test set): the pages run out early, and the document must not end as if
they had all been read. It ends as an error (the response without its last chunk)."""

from __future__ import annotations

import uuid

import pytest

from database.core import Tenant
from database.results import crud, export
from database.test_sets import service as test_set_service
from database.test_sets.crud import get_test_set
from database.test_sets.streaming import PAGE_ROWS, GoneMidway
from tests.database.results.test_export_stream import _run, _write_results
from tests.helpers import read_while_deleting
from utils.auth import Principal, Role

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fmt", ["csv", "json", "junit"])
async def test_a_run_deleted_during_its_export_ends_it_as_an_error(
    committed_client, committed_database, committed_owner, fmt
):
    run = await _run(committed_client, committed_owner, cases=PAGE_ROWS + 250, repetitions=3)
    await _write_results(committed_database, committed_owner, run, ["an answer"])
    principal = Principal(committed_owner.organization_id, Role.viewer, committed_owner.user_id)
    async with committed_database.transaction(Tenant(committed_owner.organization_id)) as session:
        found = await crud.get_run(session, uuid.UUID(run["id"]))
        assert found is not None
        chunks = await export.export_run(session, principal, found, fmt)

    async def delete() -> None:
        url = f"/api/v1/test-sets/{run['test_set_id']}"
        assert (
            await committed_client.delete(url, headers=committed_owner.headers)
        ).status_code == 204

    with pytest.raises(GoneMidway, match="run was deleted"):
        await read_while_deleting(chunks, delete)


async def test_a_version_deleted_during_its_export_ends_it_as_an_error(
    committed_client, committed_database, committed_owner
):
    run = await _run(committed_client, committed_owner, cases=2 * PAGE_ROWS, repetitions=1)
    principal = Principal(committed_owner.organization_id, Role.viewer, committed_owner.user_id)
    async with committed_database.transaction(Tenant(committed_owner.organization_id)) as session:
        test_set = await get_test_set(session, uuid.UUID(run["test_set_id"]))
        assert test_set is not None
        chunks = await test_set_service.export(
            session, principal, test_set, "jsonl", version_number=run["test_set_version"]
        )

    async def delete() -> None:
        url = f"/api/v1/test-sets/{run['test_set_id']}"
        assert (
            await committed_client.delete(url, headers=committed_owner.headers)
        ).status_code == 204

    with pytest.raises(GoneMidway, match="test set version was deleted"):
        await read_while_deleting(chunks, delete)
