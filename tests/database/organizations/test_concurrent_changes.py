"""Two changes of one organization at once: each rename records the name it replaced, a
deletion made twice at once is recorded once. And a null name is refused, as for projects."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from tests.database.organizations.audit_helpers import audit_entries
from tests.helpers import assert_problem, register, until_waiting_for_locks

HOLD = "SELECT FROM organizations WHERE id = :id FOR UPDATE"


async def _both_waiting(client, owner, owner_engine, first: tuple, second: tuple):
    """Two requests (method, body) on the owner's organization, both waiting on a lock held
    until both wait: the first goes first."""
    path = f"/api/v1/organizations/{owner.organization_id}"
    async with owner_engine.connect() as holder:
        held = await holder.begin()
        await holder.execute(text(HOLD), {"id": owner.organization_id})
        sent = []
        for count, (method, body) in enumerate((first, second), start=1):
            request = client.request(method, path, json=body, headers=owner.headers)
            sent.append(asyncio.create_task(request))
            await until_waiting_for_locks(owner_engine, count)
        await held.rollback()
    return [await answer for answer in sent]


async def test_two_renames_at_once_each_record_the_name_they_replaced(
    committed_client, committed_owner, owner_engine
):
    client, owner = committed_client, committed_owner
    path = f"/api/v1/organizations/{owner.organization_id}"
    original = (await client.get(path, headers=owner.headers)).json()["name"]
    answers = await _both_waiting(
        client, owner, owner_engine, ("PATCH", {"name": "Alpha"}), ("PATCH", {"name": "Beta"})
    )
    assert [answer.status_code for answer in answers] == [200, 200]
    renames = await audit_entries(client, owner, action="organization.renamed")
    assert [entry["details"] for entry in reversed(renames)] == [
        {"from": original, "to": "Alpha"},
        {"from": "Alpha", "to": "Beta"},
    ]


async def test_an_organization_deleted_twice_at_once_is_recorded_once(
    committed_client, committed_owner, owner_engine
):
    client, owner = committed_client, committed_owner
    first, second = await _both_waiting(
        client, owner, owner_engine, ("DELETE", None), ("DELETE", None)
    )
    assert first.status_code == 204
    assert_problem(second, 404)
    recorded = "SELECT count(*) FROM audit_log WHERE organization_id = :id AND action = :action"
    async with owner_engine.connect() as connection:
        count = await connection.scalar(
            text(recorded), {"id": owner.organization_id, "action": "organization.deleted"}
        )
    assert count == 1


async def test_a_null_name_is_refused_naming_the_field(client):
    owner = await register(client)
    response = await client.patch(
        f"/api/v1/organizations/{owner.organization_id}", json={"name": None}, headers=owner.headers
    )
    assert_problem(response, 422, field="name")
