"""Two deletions of one prompt at once: the one that deleted it answers 204 and records it,
the other a 404 that records nothing."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text

from tests.database.organizations.audit_helpers import audit_entries
from tests.helpers import assert_problem, create_project, until_waiting_for_locks


async def test_a_prompt_deleted_twice_at_once_is_deleted_and_recorded_once(
    committed_client, committed_owner, owner_engine
):
    client, owner = committed_client, committed_owner
    project = (await create_project(client, owner))["id"]
    body = {"project_id": project, "name": uuid.uuid4().hex, "template": "hi {{x}}"}
    made = await client.post("/api/v1/prompts", json=body, headers=owner.headers)
    assert made.status_code == 201, made.text
    path = f"/api/v1/prompts/{made.json()['id']}"
    async with owner_engine.connect() as holder:
        held = await holder.begin()
        hold = "SELECT FROM prompts WHERE id = :id FOR UPDATE"
        await holder.execute(text(hold), {"id": made.json()["id"]})
        first = asyncio.create_task(client.delete(path, headers=owner.headers))
        await until_waiting_for_locks(owner_engine, 1)
        second = asyncio.create_task(client.delete(path, headers=owner.headers))
        await until_waiting_for_locks(owner_engine, 2)
        await held.rollback()
    assert (await first).status_code == 204
    assert_problem(await second, 404)
    assert len(await audit_entries(client, owner, action="prompt.deleted")) == 1
