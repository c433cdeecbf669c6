"""A request naming a project deleted while it ran (its check passed, the deletion committed
before its insert): a 409 saying so, not a 500 from the foreign key."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from tests.helpers import assert_problem, create_project, until_waiting_for_locks

HOLD = "SELECT 1 FROM projects WHERE id = :p FOR UPDATE"


async def test_a_test_made_in_a_project_deleted_meanwhile_is_a_409(
    committed_client, committed_owner, owner_engine
):
    client, owner = committed_client, committed_owner
    project = (await create_project(client, owner))["id"]
    async with owner_engine.connect() as holder:
        held = await holder.begin()
        await holder.execute(text(HOLD), {"p": project})
        deleting = asyncio.create_task(
            client.delete(f"/api/v1/projects/{project}", headers=owner.headers)
        )
        await until_waiting_for_locks(owner_engine, 1)
        body = {"project_id": project, "input": "hi"}
        making = asyncio.create_task(client.post("/api/v1/tests", json=body, headers=owner.headers))
        await until_waiting_for_locks(owner_engine, 2)
        await held.rollback()
    assert (await deleting).status_code == 204
    assert_problem(await making, 409)
