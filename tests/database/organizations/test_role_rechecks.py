"""A caller removed or demoted while their request is under way: the request was past
authentication with the role it had, so what it does is checked again against the caller's
membership, held. Each race is staged the same way: the removal or demotion is caught before it
commits (waiting to revoke an invitation the caller sent, held here), the caller's request is
sent then and waits for it, and the change commits first."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import (
    Account,
    accept_invitation,
    assert_problem,
    create_api_key,
    invite,
    register,
    remove_account,
    switch,
    unique_email,
    until_waiting_for_locks,
)

Request = Callable[[], Coroutine[Any, Any, httpx.Response]]
AddMember = Callable[[str], Awaitable[Account]]


@pytest.fixture
async def add_member(
    committed_client: httpx.AsyncClient, committed_owner: Account, owner_engine: AsyncEngine
) -> AsyncIterator[AddMember]:
    """Adds a member with a role to the owner's organization, acting there (their own
    organization and account removed at the end)."""
    registered: list[Account] = []

    async def add(role: str) -> Account:
        person = await register(committed_client, name=role.title())
        registered.append(person)
        invitation = await invite(committed_client, committed_owner, person.email, role)
        accepted = await accept_invitation(committed_client, person, invitation["token"])
        assert accepted.status_code == 200, accepted.text
        return await switch(committed_client, person, committed_owner.organization_id)

    yield add
    for person in registered:
        await remove_account(owner_engine, person)


def _change(client: httpx.AsyncClient, owner: Account, member: Account, to: str | None) -> Request:
    """The owner's removal of `member` (`to` None), or change of their role to `to`."""
    url = f"/api/v1/organizations/{owner.organization_id}/members/{member.user_id}"
    if to is None:
        return lambda: client.delete(url, headers=owner.headers)
    return lambda: client.patch(url, json={"role": to}, headers=owner.headers)


async def _sent_while_changed(
    owner_engine: AsyncEngine, caught: str, change: Request, request: Request
) -> httpx.Response:
    """`request`'s answer, sent while `change` waited to revoke the invitation `caught`; the
    change committed first."""
    async with owner_engine.connect() as holder:
        held = await holder.begin()
        await holder.execute(
            text("SELECT 1 FROM invitations WHERE id = :id FOR UPDATE"), {"id": caught}
        )
        changing = asyncio.create_task(change())
        await until_waiting_for_locks(owner_engine, 1, changing)
        requesting = asyncio.create_task(request())
        await until_waiting_for_locks(owner_engine, 2, requesting)
        await held.rollback()
    changed, answered = await asyncio.wait_for(asyncio.gather(changing, requesting), 30)
    assert changed.status_code in (200, 204), changed.text
    return answered


# --- deleting the organization --------------------------------------------------------------


@pytest.mark.parametrize(("to", "status"), [(None, 401), ("admin", 403)])
async def test_an_owner_removed_or_demoted_meanwhile_deletes_nothing(
    committed_client, committed_owner, add_member, owner_engine, to, status
):
    client, owner = committed_client, committed_owner
    other_owner = await add_member("owner")
    caught = await invite(client, other_owner, unique_email(), "owner")  # revoked by either
    org_url = f"/api/v1/organizations/{owner.organization_id}"
    deleted = await _sent_while_changed(
        owner_engine,
        caught["id"],
        _change(client, owner, other_owner, to),
        lambda: client.delete(org_url, headers=other_owner.headers),
    )
    assert_problem(deleted, status)
    assert (await client.get(org_url, headers=owner.headers)).status_code == 200


@pytest.mark.parametrize("to", [None, "admin"])
async def test_a_removal_or_demotion_sent_while_the_owner_deletes_waits_for_the_deletion(
    committed_client, committed_owner, add_member, owner_engine, to
):
    """The deletion is past its check, waiting to delete the organization (held here): the
    change of the deleting owner sent then waits for it, then finds the organization gone. The
    deletion holds every membership first, in the order every change takes them, so the two
    never wait for each other (a deadlock, one of them a 409)."""
    client, owner = committed_client, committed_owner
    other_owner = await add_member("owner")  # after the owner in user order: locked second
    org_url = f"/api/v1/organizations/{owner.organization_id}"
    async with owner_engine.connect() as holder:
        held = await holder.begin()
        await holder.execute(
            text("SELECT 1 FROM organizations WHERE id = :id FOR UPDATE"),
            {"id": owner.organization_id},
        )
        deleting = asyncio.create_task(client.delete(org_url, headers=other_owner.headers))
        await until_waiting_for_locks(owner_engine, 1, deleting)
        changing = asyncio.create_task(_change(client, owner, other_owner, to)())
        await until_waiting_for_locks(owner_engine, 2, changing)
        await held.rollback()
    deleted, changed = await asyncio.wait_for(asyncio.gather(deleting, changing), 30)
    assert deleted.status_code == 204, deleted.text
    assert_problem(changed, 401)  # the owner is no member of it any more


# --- making a key, sending an invitation ----------------------------------------------------


@pytest.mark.parametrize(
    ("what", "body"),
    [("api-keys", {"name": "made meanwhile"}), ("invitations", {"email": "meanwhile@example.com"})],
)
async def test_an_admin_demoted_meanwhile_makes_nothing_even_within_their_new_role(
    committed_client, committed_owner, add_member, owner_engine, what, body
):
    """A member key or invitation grants no more than the member the admin became, but
    making one needs the admin role, which they no longer hold."""
    client, owner = committed_client, committed_owner
    admin = await add_member("admin")
    caught = await invite(client, admin, unique_email(), "admin")  # above the new role
    url = f"/api/v1/organizations/{owner.organization_id}/{what}"
    made = await _sent_while_changed(
        owner_engine,
        caught["id"],
        _change(client, owner, admin, "member"),
        lambda: client.post(url, json={**body, "role": "member"}, headers=admin.headers),
    )
    assert_problem(made, 403)
    listed = (await client.get(url, headers=owner.headers)).json()["items"]
    assert [item for item in listed if body.items() <= item.items()] == []


# --- renaming, revoking a key or an invitation ----------------------------------------------


async def _rename(client: httpx.AsyncClient, owner: Account, admin: Account) -> Request:
    url = f"/api/v1/organizations/{owner.organization_id}"
    return lambda: client.patch(url, json={"name": "Renamed meanwhile"}, headers=admin.headers)


async def _revoke_key(client: httpx.AsyncClient, owner: Account, admin: Account) -> Request:
    key = await create_api_key(client, owner, "member")
    url = f"/api/v1/organizations/{owner.organization_id}/api-keys/{key['id']}"
    return lambda: client.delete(url, headers=admin.headers)


async def _revoke_invitation(client: httpx.AsyncClient, owner: Account, admin: Account) -> Request:
    sent = await invite(client, owner, unique_email(), "member")
    url = f"/api/v1/organizations/{owner.organization_id}/invitations/{sent['id']}"
    return lambda: client.delete(url, headers=admin.headers)


ADMIN_REQUESTS = {"rename": _rename, "revoke_key": _revoke_key, "revoke_inv": _revoke_invitation}


@pytest.mark.parametrize("what", list(ADMIN_REQUESTS))
@pytest.mark.parametrize(("to", "status"), [(None, 401), ("member", 403)])
async def test_an_admin_removed_or_demoted_meanwhile_changes_nothing(
    committed_client, committed_owner, add_member, owner_engine, what, to, status
):
    client, owner = committed_client, committed_owner
    admin = await add_member("admin")
    caught = await invite(client, admin, unique_email(), "admin")
    request = await ADMIN_REQUESTS[what](client, owner, admin)
    answered = await _sent_while_changed(
        owner_engine, caught["id"], _change(client, owner, admin, to), request
    )
    assert_problem(answered, status)
    assert await _changes_by(owner_engine, owner.organization_id, admin.user_id) == []


async def _changes_by(
    owner_engine: AsyncEngine, organization_id: uuid.UUID, actor: uuid.UUID
) -> list[str]:
    """What the actor renamed or revoked in the organization, by the audit log."""
    async with owner_engine.connect() as connection:
        rows = await connection.scalars(
            text(
                "SELECT action FROM audit_log WHERE organization_id = :o AND actor_user_id = :u"
                " AND action IN ('organization.renamed', 'api_key.revoked', 'invitation.revoked')"
            ),
            {"o": organization_id, "u": actor},
        )
        return list(rows.all())
