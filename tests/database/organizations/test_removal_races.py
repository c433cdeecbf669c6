"""A member removed while something involving them is under way.

- While they make a key or an invitation: what they made goes with them. The removal revokes
  the keys and invitations its member made with one statement, which cannot see a row not yet
  committed; the request making one holds the maker's membership until it commits, so a
  removal waits for it and then revokes it too.
- While ownership is handed to them: the transfer locks both memberships, so it sees the
  removal (a 404) rather than update a row that is gone (a 500)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import (
    Account,
    accept_invitation,
    add_member,
    assert_problem,
    bearer,
    create_api_key,
    invite,
    register,
    remove_account,
    switch,
    until_waiting_for_locks,
)

Request = Callable[[], Coroutine[Any, Any, httpx.Response]]


async def _made_while(
    owner_engine: AsyncEngine, owner: Account, make: Request, meanwhile: Request
) -> tuple[httpx.Response, httpx.Response]:
    """`make` (as the admin) caught before it commits, and `meanwhile` (the owner's change of
    the admin's membership) sent then."""
    async with owner_engine.connect() as holder:
        # Whatever the request inserts checks its organization: held here, it waits.
        transaction = await holder.begin()
        await holder.execute(
            text("SELECT 1 FROM organizations WHERE id = :id FOR UPDATE"),
            {"id": owner.organization_id},
        )
        making = asyncio.create_task(make())
        await until_waiting_for_locks(owner_engine, 1)
        changing = asyncio.create_task(meanwhile())
        # It waits for the key's request (or, were it not held, goes through).
        await until_waiting_for_locks(owner_engine, 2, changing)
        await transaction.rollback()
    made, changed = await asyncio.wait_for(asyncio.gather(making, changing), timeout=30)
    return made, changed


async def _made_while_removed(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    owner: Account,
    admin: Account,
    make: Request,
) -> httpx.Response:
    """`make` (as the admin) caught before it commits, the admin's removal sent meanwhile."""
    url = f"/api/v1/organizations/{owner.organization_id}/members/{admin.user_id}"
    made, removed = await _made_while(
        owner_engine, owner, make, lambda: client.delete(url, headers=owner.headers)
    )
    assert removed.status_code == 204, removed.text
    return made


@pytest.fixture
async def admin(committed_client, committed_owner, owner_engine):
    """An admin of the owner's organization, acting there (their own one removed at the end)."""
    person = await register(committed_client, name="Admin")
    invitation = await invite(committed_client, committed_owner, person.email, "admin")
    accepted = await accept_invitation(committed_client, person, invitation["token"])
    assert accepted.status_code == 200, accepted.text
    yield await switch(committed_client, person, committed_owner.organization_id)
    await remove_account(owner_engine, person)


async def test_a_key_made_while_its_maker_is_removed_is_revoked(
    committed_client, committed_owner, admin, owner_engine
):
    org = committed_owner.organization_id

    async def make_key() -> httpx.Response:
        return await committed_client.post(
            f"/api/v1/organizations/{org}/api-keys",
            json={"name": "escape", "role": "admin"},
            headers=admin.headers,
        )

    made = await _made_while_removed(
        committed_client, owner_engine, committed_owner, admin, make_key
    )
    assert made.status_code == 201, made.text
    used = await committed_client.get(
        f"/api/v1/organizations/{org}/api-keys", headers=bearer(made.json()["key"])
    )
    assert_problem(used, 401)


async def test_a_key_made_while_its_maker_is_demoted_is_revoked(
    committed_client, committed_owner, admin, owner_engine
):
    """The demotion waits for the key's request, then revokes it with the admin's other keys
    above their new role."""
    org = committed_owner.organization_id
    made, demoted = await _made_while(
        owner_engine,
        committed_owner,
        lambda: committed_client.post(
            f"/api/v1/organizations/{org}/api-keys",
            json={"name": "escape", "role": "admin"},
            headers=admin.headers,
        ),
        lambda: committed_client.patch(
            f"/api/v1/organizations/{org}/members/{admin.user_id}",
            json={"role": "member"},
            headers=committed_owner.headers,
        ),
    )
    assert (made.status_code, demoted.status_code) == (201, 200), (made.text, demoted.text)
    used = await committed_client.get("/api/v1/projects", headers=bearer(made.json()["key"]))
    assert_problem(used, 401)


async def test_an_invitation_sent_while_its_sender_is_removed_is_revoked(
    committed_client, committed_owner, admin, owner_engine
):
    org = committed_owner.organization_id
    guest = await register(committed_client, name="Guest")

    async def send() -> httpx.Response:
        return await committed_client.post(
            f"/api/v1/organizations/{org}/invitations",
            json={"email": guest.email, "role": "admin"},
            headers=admin.headers,
        )

    try:
        sent = await _made_while_removed(
            committed_client, owner_engine, committed_owner, admin, send
        )
        assert sent.status_code == 201, sent.text
        accepted = await accept_invitation(committed_client, guest, sent.json()["token"])
        assert accepted.status_code in (404, 409, 410), accepted.text
    finally:
        await remove_account(owner_engine, guest)


async def test_a_transfer_to_a_member_removed_meanwhile_is_a_404(
    committed_client, committed_owner, admin, owner_engine
):
    org = committed_owner.organization_id
    async with owner_engine.connect() as holder:
        transaction = await holder.begin()
        await holder.execute(
            text(
                "SELECT 1 FROM memberships WHERE user_id = :u AND organization_id = :o FOR UPDATE"
            ),
            {"u": admin.user_id, "o": org},
        )
        transferring = asyncio.create_task(
            committed_client.post(
                f"/api/v1/organizations/{org}/transfer-ownership",
                json={"user_id": str(admin.user_id)},
                headers=committed_owner.headers,
            )
        )
        await until_waiting_for_locks(owner_engine, 1)
        # The member goes while the transfer waits for them.
        await holder.execute(
            text("DELETE FROM memberships WHERE user_id = :u AND organization_id = :o"),
            {"u": admin.user_id, "o": org},
        )
        await transaction.commit()
    transferred = await asyncio.wait_for(transferring, timeout=30)
    assert_problem(transferred, 404)
    members = await committed_client.get(
        f"/api/v1/organizations/{org}/members", headers=committed_owner.headers
    )
    assert [m["role"] for m in members.json()["items"]] == ["owner"]


@pytest.mark.parametrize("change", ["demote", "remove"])
async def test_a_member_made_owner_meanwhile_is_not_changed_as_a_plain_one(
    committed_client, committed_owner, admin, owner_engine, change
):
    """An admin demotes or removes a member while the owner hands the organization to that
    member: the admin's request waits for the handover, then sees an owner (whose role only
    an owner takes away), not the plain member it read before; the organization keeps one."""
    org = committed_owner.organization_id
    member = await register(committed_client, name="Member")
    invitation = await invite(committed_client, committed_owner, member.email, "member")
    assert (await accept_invitation(committed_client, member, invitation["token"])).is_success
    url = f"/api/v1/organizations/{org}/members/{member.user_id}"
    try:
        async with owner_engine.connect() as holder:
            transaction = await holder.begin()
            for user, role in ((member.user_id, "owner"), (committed_owner.user_id, "admin")):
                await holder.execute(
                    text(
                        "UPDATE memberships SET role = :role"
                        " WHERE user_id = :u AND organization_id = :o"
                    ),
                    {"role": role, "u": user, "o": org},
                )
            changing = asyncio.create_task(
                committed_client.patch(url, json={"role": "viewer"}, headers=admin.headers)
                if change == "demote"
                else committed_client.delete(url, headers=admin.headers)
            )
            await until_waiting_for_locks(owner_engine, 1, changing)
            await transaction.commit()
        changed = await asyncio.wait_for(changing, timeout=30)
        assert_problem(changed, 403)
        async with owner_engine.connect() as connection:
            owners = await connection.scalar(
                text(
                    "SELECT array_agg(user_id) FROM memberships WHERE organization_id = :o"
                    " AND role = 'owner'"
                ),
                {"o": org},
            )
        assert owners == [member.user_id]
    finally:
        await remove_account(owner_engine, member)


async def _promoted_while(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    owner: Account,
    member: Account,
    headers: dict[str, str],
    meanwhile: Request,
) -> httpx.Response:
    """The member's promotion (with `headers`) past authentication, waiting for the member's
    row that something else holds; `meanwhile` (which must succeed) sent then."""
    async with owner_engine.connect() as holder:
        held = await holder.begin()
        await holder.execute(
            text(
                "SELECT 1 FROM memberships WHERE organization_id = :o AND user_id = :u FOR UPDATE"
            ),
            {"o": owner.organization_id, "u": member.user_id},
        )
        members = f"/api/v1/organizations/{owner.organization_id}/members"
        promoting = asyncio.create_task(
            client.patch(f"{members}/{member.user_id}", json={"role": "admin"}, headers=headers)
        )
        await until_waiting_for_locks(owner_engine, 1)
        done = await meanwhile()
        assert done.status_code in (200, 204), done.text
        await held.rollback()
    return await asyncio.wait_for(promoting, 30)


async def _role_of(client: httpx.AsyncClient, owner: Account, member: Account) -> str:
    listed = await client.get(
        f"/api/v1/organizations/{owner.organization_id}/members", headers=owner.headers
    )
    return str(
        {item["user_id"]: item["role"] for item in listed.json()["items"]}[str(member.user_id)]
    )


@pytest.mark.parametrize("change", ["removed", "demoted"])
async def test_an_admin_removed_or_demoted_meanwhile_changes_no_role(
    committed_client, owner_engine, change
):
    """The admin's request was past authentication when the owner removed (or demoted) them:
    it promoted a member with the role it had read. The acting member's row is locked with the
    member's and the owners': the change sees the admin gone (401) or a member now (403)."""
    client = committed_client
    member = await register(client, name="Member")  # the smallest id: locked first
    owner = await register(client, name="Owner")
    admin = await register(client, name="Admin")
    members = f"/api/v1/organizations/{owner.organization_id}/members"
    try:
        for person, role in ((admin, "admin"), (member, "member")):
            invitation = await invite(client, owner, person.email, role)
            accepted = await accept_invitation(client, person, invitation["token"])
            assert accepted.status_code == 200
        acting = await switch(client, admin, owner.organization_id)

        async def meanwhile() -> httpx.Response:
            if change == "removed":
                return await client.delete(f"{members}/{admin.user_id}", headers=owner.headers)
            return await client.patch(
                f"{members}/{admin.user_id}", json={"role": "member"}, headers=owner.headers
            )

        promoted = await _promoted_while(
            client, owner_engine, owner, member, acting.headers, meanwhile
        )
        assert_problem(promoted, 401 if change == "removed" else 403)
        assert await _role_of(client, owner, member) == "member"
    finally:
        for account in (admin, member, owner):
            await remove_account(owner_engine, account)


async def test_an_api_key_revoked_meanwhile_changes_no_role(committed_client, owner_engine):
    client = committed_client
    member = await register(client, name="Member")
    owner = await register(client, name="Owner")
    try:
        invitation = await invite(client, owner, member.email, "member")
        assert (await accept_invitation(client, member, invitation["token"])).status_code == 200
        key = await create_api_key(client, owner, "admin")

        async def meanwhile() -> httpx.Response:
            return await client.delete(
                f"/api/v1/organizations/{owner.organization_id}/api-keys/{key['id']}",
                headers=owner.headers,
            )

        promoted = await _promoted_while(
            client, owner_engine, owner, member, bearer(key["key"]), meanwhile
        )
        assert_problem(promoted, 401)
        assert await _role_of(client, owner, member) == "member"
    finally:
        for account in (member, owner):
            await remove_account(owner_engine, account)


async def _made_while_revoked(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, owner: Account, maker: dict, revoked: dict
) -> tuple[httpx.Response, httpx.Response]:
    """A key made with `maker` caught before it commits, and `revoked` revoked then."""
    keys = f"/api/v1/organizations/{owner.organization_id}/api-keys"
    async with owner_engine.connect() as holder:
        # The new key's insert checks its organization: held here, the making waits there.
        held = await holder.begin()
        await holder.execute(
            text("SELECT 1 FROM organizations WHERE id = :id FOR UPDATE"),
            {"id": owner.organization_id},
        )
        body = {"name": "made meanwhile", "role": "admin"}
        making = asyncio.create_task(client.post(keys, json=body, headers=bearer(maker["key"])))
        await until_waiting_for_locks(owner_engine, 1)
        revoking = asyncio.create_task(
            client.delete(f"{keys}/{revoked['id']}", headers=owner.headers)
        )
        await until_waiting_for_locks(owner_engine, 2, revoking)
        await held.rollback()
    made, revoked_now = await asyncio.wait_for(asyncio.gather(making, revoking), timeout=30)
    return made, revoked_now


async def test_a_key_made_while_its_making_key_is_revoked_goes_with_it(
    committed_client, committed_owner, owner_engine
):
    """The revocation could not see the key being made (uncommitted), and the making did not
    wait for it: the new key outlived the key that made it, and revoking that again found it
    revoked and looked no further. The making key is now held while the new key is made."""
    client, owner = committed_client, committed_owner
    org = owner.organization_id
    keys = f"/api/v1/organizations/{org}/api-keys"
    parent = await create_api_key(client, owner, "admin")
    made, revoked = await _made_while_revoked(client, owner_engine, owner, parent, parent)
    assert revoked.status_code == 204, revoked.text
    if made.status_code == 201:  # made first: revoked with its maker
        assert_problem(await client.get(keys, headers=bearer(made.json()["key"])), 401)
    else:  # or refused, the maker revoked first
        assert_problem(made, 401)


async def test_keys_made_with_a_key_a_demotion_revokes_go_with_it(client):
    owner = await register(client)
    org = owner.organization_id
    keys = f"/api/v1/organizations/{org}/api-keys"
    admin = await add_member(client, owner, "admin")
    parent = await create_api_key(client, admin, "admin")
    body = {"name": "child", "role": "member"}  # not above the demoted role, but made with one
    child = await client.post(keys, json=body, headers=bearer(parent["key"]))
    assert child.status_code == 201, child.text
    demoted = await client.patch(
        f"/api/v1/organizations/{org}/members/{admin.user_id}",
        json={"role": "member"},
        headers=owner.headers,
    )
    assert demoted.status_code == 200, demoted.text
    for key in (parent, child.json()):
        assert_problem(await client.get("/api/v1/projects", headers=bearer(key["key"])), 401)


async def _key_made_with(client: httpx.AsyncClient, keys: str, maker: dict, name: str) -> dict:
    made = await client.post(
        keys, json={"name": name, "role": "admin"}, headers=bearer(maker["key"])
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


async def test_a_key_made_while_an_ancestor_of_its_maker_is_revoked_goes_too(
    committed_client, committed_owner, owner_engine
):
    """The sweep's one recursive statement fixed the keys it revoked when it began: a key being
    made with a descendant was committed after, and outlived the whole tree."""
    client, owner = committed_client, committed_owner
    org = owner.organization_id
    keys = f"/api/v1/organizations/{org}/api-keys"
    parent = await create_api_key(client, owner, "admin")
    child = await _key_made_with(client, keys, parent, "child")
    made, revoked = await _made_while_revoked(client, owner_engine, owner, child, parent)
    assert (made.status_code, revoked.status_code) == (201, 204), (made.text, revoked.text)
    for key in (child, made.json()):
        assert_problem(await client.get("/api/v1/projects", headers=bearer(key["key"])), 401)


async def test_two_revocations_of_one_tree_wait_for_each_other_cleanly(
    committed_client, committed_owner, owner_engine
):
    """A sweep takes a tree's keys a generation at a time, top down and in id order, never in
    the table's order (which a key's use changes, its row written again): revoking the root
    while another revocation of one of its keys is under way waits for it, and both end."""
    client, owner = committed_client, committed_owner
    org = owner.organization_id
    keys = f"/api/v1/organizations/{org}/api-keys"
    root = await create_api_key(client, owner, "admin")
    middle = await _key_made_with(client, keys, root, "middle")
    leaf = await _key_made_with(client, keys, middle, "leaf")
    async with owner_engine.begin() as connection:  # used: its row now after its child's
        await connection.execute(
            text("UPDATE api_keys SET last_used_at = now() - interval '1 hour' WHERE id = :id"),
            {"id": middle["id"]},
        )
    async with owner_engine.connect() as other:
        # Another revocation of the middle key, under way: the key, then what it made.
        transaction = await other.begin()
        await other.execute(
            text("UPDATE api_keys SET revoked_at = now() WHERE id = :id"), {"id": middle["id"]}
        )
        revoking = asyncio.create_task(client.delete(f"{keys}/{root['id']}", headers=owner.headers))
        await until_waiting_for_locks(owner_engine, 1, revoking)
        await other.execute(
            text(
                "UPDATE api_keys SET revoked_at = now() WHERE id IN (SELECT id FROM api_keys"
                " WHERE created_with_key_id = :id ORDER BY id FOR NO KEY UPDATE)"
            ),
            {"id": middle["id"]},
        )
        await transaction.commit()
    assert (await asyncio.wait_for(revoking, 30)).status_code == 204
    for key in (root, middle, leaf):
        assert_problem(await client.get("/api/v1/projects", headers=bearer(key["key"])), 401)
