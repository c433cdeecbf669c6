"""A request naming a project deleted while it ran (its check passed, the deletion committed
before its insert): a 409 saying so, not a 500 from the foreign key."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from tests.helpers import (
    assert_problem,
    beside_a_deletion,
    create_project,
    until_waiting_for_locks,
)

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


async def _beside_a_deletion(*args: Any) -> Any:
    """`beside_a_deletion`, the deletion answering 204: the other request's answer."""
    deleted, answer = await beside_a_deletion(*args)
    assert deleted.status_code == 204
    return answer


async def test_a_change_of_a_project_deleted_meanwhile_is_a_409(
    committed_client, committed_owner, owner_engine
):
    """The update matched no row: a 500 (StaleDataError)."""
    client, owner = committed_client, committed_owner
    project = (await create_project(client, owner))["id"]
    path = f"/api/v1/projects/{project}"
    changed = await _beside_a_deletion(
        client, owner, owner_engine, "projects", project, path, ("PATCH", path, {"name": "x"})
    )
    assert_problem(changed, 409)
    assert "deleted meanwhile" in changed.json()["detail"]


async def test_a_change_of_a_webhook_deleted_meanwhile_is_a_409_or_404(
    committed_client, committed_owner, owner_engine
):
    client, owner = committed_client, committed_owner
    project = (await create_project(client, owner))["id"]
    body = {"url": "https://hooks.example.com/a", "events": ["run.completed"]}
    webhooks = f"/api/v1/projects/{project}/webhooks"
    for change, status in (
        (("PATCH", "", {"enabled": False}), 409),
        (("POST", "/rotate-secret", None), 404),
    ):
        made = await client.post(webhooks, json=body, headers=owner.headers)
        path = f"{webhooks}/{made.json()['id']}"
        method, suffix, sent = change
        changed = await _beside_a_deletion(
            client,
            owner,
            owner_engine,
            "webhooks",
            made.json()["id"],
            path,
            (method, path + suffix, sent),
        )
        assert_problem(changed, status)
