from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text

from tests.helpers import (
    Account,
    accept_invitation,
    add_member,
    assert_problem,
    bearer,
    create_api_key,
    invite,
    login,
    register,
    switch,
    tenant_session,
    unique_email,
)


def invitations_url(organization_id: uuid.UUID) -> str:
    return f"/api/v1/organizations/{organization_id}/invitations"


def members_url(organization_id: uuid.UUID, user_id: uuid.UUID | str | None = None) -> str:
    url = f"/api/v1/organizations/{organization_id}/members"
    return url if user_id is None else f"{url}/{user_id}"


async def _roles(client: httpx.AsyncClient, account: Account) -> dict[str, str]:
    response = await client.get(
        members_url(account.organization_id), params={"limit": 200}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    return {item["user_id"]: item["role"] for item in response.json()["items"]}


# --- list -----------------------------------------------------------------------------------


async def test_list_shows_members_with_email_name_role(client):
    owner = await register(client, name="Olive Owner")
    admin = await add_member(client, owner, "admin", name="Adam Admin")
    viewer = await add_member(client, owner, "viewer", name="Vera Viewer")
    await register(client, name="Not A Member")

    response = await client.get(members_url(owner.organization_id), headers=viewer.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 3
    assert [(m["user_id"], m["email"], m["name"], m["role"]) for m in body["items"]] == [
        (str(owner.user_id), owner.email, "Olive Owner", "owner"),
        (str(admin.user_id), admin.email, "Adam Admin", "admin"),
        (str(viewer.user_id), viewer.email, "Vera Viewer", "viewer"),
    ]
    for item in body["items"]:
        assert set(item) == {"user_id", "email", "name", "role", "created_at"}
    assert "password" not in response.text


async def test_list_paginates_with_total(client):
    owner = await register(client)
    added = [await add_member(client, owner, "member") for _ in range(4)]
    expected = [str(owner.user_id)] + [str(person.user_id) for person in added]
    seen: list[str] = []
    for offset in (0, 2, 4):
        body = (
            await client.get(
                members_url(owner.organization_id),
                params={"limit": 2, "offset": offset},
                headers=owner.headers,
            )
        ).json()
        assert body["total"] == 5
        assert (body["limit"], body["offset"]) == (2, offset)
        seen += [item["user_id"] for item in body["items"]]
    assert seen == expected
    bad = await client.get(
        members_url(owner.organization_id), params={"limit": 500}, headers=owner.headers
    )
    assert_problem(bad, 422, field="limit")


async def test_list_members_with_an_api_key(client):
    owner = await register(client)
    key = await create_api_key(client, owner, "viewer")
    response = await client.get(members_url(owner.organization_id), headers=bearer(key["key"]))
    assert response.status_code == 200, response.text
    assert [m["user_id"] for m in response.json()["items"]] == [str(owner.user_id)]


# --- change role ----------------------------------------------------------------------------


async def test_owner_changes_a_members_role(client):
    owner = await register(client)
    person = await add_member(client, owner, "viewer")
    for role in ("member", "admin", "viewer", "owner"):
        response = await client.patch(
            members_url(owner.organization_id, person.user_id),
            json={"role": role},
            headers=owner.headers,
        )
        assert response.status_code == 200, response.text
        assert response.json()["role"] == role
        assert response.json()["user_id"] == str(person.user_id)
        assert (await _roles(client, owner))[str(person.user_id)] == role
        me = (await client.get("/api/v1/users/me", headers=person.headers)).json()
        assert me["role"] == role  # their existing token follows at once


async def test_admin_changes_roles_below_owner(client):
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    person = await add_member(client, owner, "member")
    for role in ("viewer", "admin", "member"):
        response = await client.patch(
            members_url(owner.organization_id, person.user_id),
            json={"role": role},
            headers=admin.headers,
        )
        assert response.status_code == 200, response.text
        assert response.json()["role"] == role


async def test_admin_cannot_grant_or_change_the_owner_role(client):
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    person = await add_member(client, owner, "member")
    promote = await client.patch(
        members_url(owner.organization_id, person.user_id),
        json={"role": "owner"},
        headers=admin.headers,
    )
    assert_problem(promote, 403)
    promote_self = await client.patch(
        members_url(owner.organization_id, admin.user_id),
        json={"role": "owner"},
        headers=admin.headers,
    )
    assert_problem(promote_self, 403)
    demote_owner = await client.patch(
        members_url(owner.organization_id, owner.user_id),
        json={"role": "viewer"},
        headers=admin.headers,
    )
    assert_problem(demote_owner, 403)
    assert await _roles(client, owner) == {
        str(owner.user_id): "owner",
        str(admin.user_id): "admin",
        str(person.user_id): "member",
    }


@pytest.mark.parametrize("role", ["viewer", "member"])
async def test_viewer_and_member_cannot_change_roles(client, role):
    owner = await register(client)
    caller = await add_member(client, owner, role)
    person = await add_member(client, owner, "viewer")
    for target in (person.user_id, caller.user_id):
        response = await client.patch(
            members_url(owner.organization_id, target),
            json={"role": "admin"},
            headers=caller.headers,
        )
        assert_problem(response, 403)
    roles = await _roles(client, owner)
    assert (roles[str(caller.user_id)], roles[str(person.user_id)]) == (role, "viewer")


async def test_change_role_of_a_non_member_is_404(client):
    owner = await register(client)
    stranger = await register(client)
    for user_id in (stranger.user_id, uuid.uuid4()):
        response = await client.patch(
            members_url(owner.organization_id, user_id),
            json={"role": "viewer"},
            headers=owner.headers,
        )
        assert_problem(response, 404)
    # The stranger's own membership elsewhere is untouched.
    me = (await client.get("/api/v1/users/me", headers=stranger.headers)).json()
    assert me["role"] == "owner"


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "role"), ({"role": "god"}, "role"), ({"role": "admin", "email": "x@y.com"}, "email")],
)
async def test_change_role_refuses_bad_bodies(client, body, field):
    owner = await register(client)
    person = await add_member(client, owner, "viewer")
    response = await client.patch(
        members_url(owner.organization_id, person.user_id), json=body, headers=owner.headers
    )
    assert_problem(response, 422, field=field)
    assert (await _roles(client, owner))[str(person.user_id)] == "viewer"


async def test_the_last_owner_cannot_be_demoted(client):
    owner = await register(client)
    response = await client.patch(
        members_url(owner.organization_id, owner.user_id),
        json={"role": "admin"},
        headers=owner.headers,
    )
    body = assert_problem(response, 409)
    assert "owner" in body["detail"]
    assert (await _roles(client, owner))[str(owner.user_id)] == "owner"


async def test_one_of_two_owners_can_step_down_but_not_the_last(client):
    owner = await register(client)
    second = await add_member(client, owner, "owner")
    first_down = await client.patch(
        members_url(owner.organization_id, owner.user_id),
        json={"role": "admin"},
        headers=owner.headers,
    )
    assert first_down.status_code == 200, first_down.text
    assert first_down.json()["role"] == "admin"
    last_down = await client.patch(
        members_url(owner.organization_id, second.user_id),
        json={"role": "member"},
        headers=second.headers,
    )
    assert_problem(last_down, 409)
    assert await _roles(client, owner) == {
        str(owner.user_id): "admin",
        str(second.user_id): "owner",
    }


async def test_an_owner_can_demote_another_owner(client):
    owner = await register(client)
    second = await add_member(client, owner, "owner")
    response = await client.patch(
        members_url(owner.organization_id, second.user_id),
        json={"role": "viewer"},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    assert_problem(
        await client.delete(
            f"/api/v1/organizations/{owner.organization_id}", headers=second.headers
        ),
        403,
    )


# --- role changes take effect at once ---------------------------------------------------------


async def test_a_demoted_admin_loses_admin_rights_at_once(client):
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    ok = await client.post(
        invitations_url(owner.organization_id),
        json={"email": unique_email()},
        headers=admin.headers,
    )
    assert ok.status_code == 201, ok.text

    demote = await client.patch(
        members_url(owner.organization_id, admin.user_id),
        json={"role": "member"},
        headers=owner.headers,
    )
    assert demote.status_code == 200, demote.text

    refused = await client.post(
        invitations_url(owner.organization_id),
        json={"email": unique_email()},
        headers=admin.headers,
    )
    assert_problem(refused, 403)
    keys = await client.get(
        f"/api/v1/organizations/{owner.organization_id}/api-keys", headers=admin.headers
    )
    assert_problem(keys, 403)
    rename = await client.patch(
        f"/api/v1/organizations/{owner.organization_id}", json={"name": "x"}, headers=admin.headers
    )
    assert_problem(rename, 403)
    # A refreshed token carries the new role too.
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": admin.refresh_token}
    )
    assert refreshed.status_code == 200, refreshed.text
    me = await client.get("/api/v1/users/me", headers=bearer(refreshed.json()["access_token"]))
    assert me.json()["role"] == "member"


async def test_a_promoted_member_gains_rights_at_once(client):
    owner = await register(client)
    person = await add_member(client, owner, "viewer")
    newcomer = unique_email()
    before = await client.post(
        invitations_url(owner.organization_id), json={"email": newcomer}, headers=person.headers
    )
    assert_problem(before, 403)
    await client.patch(
        members_url(owner.organization_id, person.user_id),
        json={"role": "admin"},
        headers=owner.headers,
    )
    after = await client.post(
        invitations_url(owner.organization_id), json={"email": newcomer}, headers=person.headers
    )
    assert after.status_code == 201, after.text


# --- remove ---------------------------------------------------------------------------------


@pytest.mark.parametrize("caller_role", ["owner", "admin"])
async def test_owner_and_admin_remove_members(client, caller_role):
    owner = await register(client)
    caller = owner if caller_role == "owner" else await add_member(client, owner, "admin")
    person = await add_member(client, owner, "admin")
    response = await client.delete(
        members_url(owner.organization_id, person.user_id), headers=caller.headers
    )
    assert response.status_code == 204, response.text
    assert str(person.user_id) not in await _roles(client, owner)


async def test_a_removed_members_tokens_stop_working_at_once(client):
    owner = await register(client)
    person = await add_member(client, owner, "admin")
    assert (await client.get("/api/v1/users/me", headers=person.headers)).status_code == 200
    response = await client.delete(
        members_url(owner.organization_id, person.user_id), headers=owner.headers
    )
    assert response.status_code == 204, response.text
    for url in ("/api/v1/users/me", members_url(owner.organization_id)):
        assert_problem(await client.get(url, headers=person.headers), 401)
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": person.refresh_token}
    )
    assert_problem(refresh, 401)
    # Switching back in is refused as well.
    relogin = await login(client, person.email)
    assert relogin.status_code == 200
    switched = await client.post(
        "/api/v1/auth/switch-organization",
        json={"organization_id": str(owner.organization_id)},
        headers=bearer(relogin.json()["access_token"]),
    )
    assert_problem(switched, 404)


async def test_removal_ends_the_members_sessions_for_good(client, database):
    """Being added again later must not bring the old login sessions back to life."""
    owner = await register(client)
    person = await add_member(client, owner, "member")
    removed = await client.delete(
        members_url(owner.organization_id, person.user_id), headers=owner.headers
    )
    assert removed.status_code == 204, removed.text
    async with tenant_session(database, owner.organization_id, person.user_id) as session:
        live = await session.scalar(
            text("SELECT count(*) FROM auth_sessions WHERE revoked_at IS NULL")
        )
    assert live == 0

    invitation = await invite(client, owner, person.email)
    relogin = await login(client, person.email)
    assert relogin.status_code == 200, relogin.text
    readded = await client.post(
        "/api/v1/auth/accept-invitation",
        json={"token": invitation["token"]},
        headers=bearer(relogin.json()["access_token"]),
    )
    assert readded.status_code == 200, readded.text
    assert_problem(await client.get("/api/v1/users/me", headers=person.headers), 401)
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": person.refresh_token}
    )
    assert_problem(refresh, 401)


async def test_admin_cannot_remove_an_owner(client):
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    response = await client.delete(
        members_url(owner.organization_id, owner.user_id), headers=admin.headers
    )
    assert_problem(response, 403)
    assert (await _roles(client, owner))[str(owner.user_id)] == "owner"
    assert (await client.get("/api/v1/users/me", headers=owner.headers)).status_code == 200


@pytest.mark.parametrize("role", ["viewer", "member"])
async def test_viewer_and_member_cannot_remove_others(client, role):
    owner = await register(client)
    caller = await add_member(client, owner, role)
    person = await add_member(client, owner, "viewer")
    for target in (person.user_id, owner.user_id):
        response = await client.delete(
            members_url(owner.organization_id, target), headers=caller.headers
        )
        assert_problem(response, 403)
    assert len(await _roles(client, owner)) == 3


@pytest.mark.parametrize("role", ["viewer", "member"])
async def test_low_role_api_keys_cannot_remove_members(client, role):
    owner = await register(client)
    person = await add_member(client, owner, "viewer")
    key = await create_api_key(client, owner, role)
    response = await client.delete(
        members_url(owner.organization_id, person.user_id), headers=bearer(key["key"])
    )
    assert_problem(response, 403)
    assert str(person.user_id) in await _roles(client, owner)


async def test_admin_api_key_removes_members_but_not_owners(client):
    owner = await register(client)
    person = await add_member(client, owner, "member")
    key = await create_api_key(client, owner, "admin")
    refused = await client.delete(
        members_url(owner.organization_id, owner.user_id), headers=bearer(key["key"])
    )
    assert_problem(refused, 403)
    ok = await client.delete(
        members_url(owner.organization_id, person.user_id), headers=bearer(key["key"])
    )
    assert ok.status_code == 204, ok.text
    assert await _roles(client, owner) == {str(owner.user_id): "owner"}


async def test_removing_a_non_member_is_404(client):
    owner = await register(client)
    stranger = await register(client)
    for user_id in (stranger.user_id, uuid.uuid4()):
        response = await client.delete(
            members_url(owner.organization_id, user_id), headers=owner.headers
        )
        assert_problem(response, 404)
    assert (await client.get("/api/v1/users/me", headers=stranger.headers)).status_code == 200


async def test_the_last_owner_cannot_be_removed_or_leave(client):
    owner = await register(client)
    await add_member(client, owner, "admin")
    response = await client.delete(
        members_url(owner.organization_id, owner.user_id), headers=owner.headers
    )
    assert_problem(response, 409)
    assert (await _roles(client, owner))[str(owner.user_id)] == "owner"
    assert (await client.get("/api/v1/users/me", headers=owner.headers)).status_code == 200


async def test_an_owner_removes_another_owner(client):
    owner = await register(client)
    second = await add_member(client, owner, "owner")
    response = await client.delete(
        members_url(owner.organization_id, second.user_id), headers=owner.headers
    )
    assert response.status_code == 204, response.text
    assert await _roles(client, owner) == {str(owner.user_id): "owner"}
    # And now the remaining one is the last.
    assert_problem(
        await client.delete(
            members_url(owner.organization_id, owner.user_id), headers=owner.headers
        ),
        409,
    )


# --- leave ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
async def test_anyone_can_leave(client, role):
    owner = await register(client)
    person = await add_member(client, owner, role)
    response = await client.delete(
        members_url(owner.organization_id, person.user_id), headers=person.headers
    )
    assert response.status_code == 204, response.text
    assert str(person.user_id) not in await _roles(client, owner)
    assert_problem(await client.get("/api/v1/users/me", headers=person.headers), 401)
    # Their own organization is unaffected.
    relogin = await login(client, person.email)
    assert relogin.status_code == 200, relogin.text
    me = (
        await client.get("/api/v1/users/me", headers=bearer(relogin.json()["access_token"]))
    ).json()
    assert me["organization_id"] != str(owner.organization_id)
    assert me["role"] == "owner"


async def test_an_owner_leaves_when_another_owner_remains(client):
    owner = await register(client)
    second = await add_member(client, owner, "owner")
    response = await client.delete(
        members_url(owner.organization_id, second.user_id), headers=second.headers
    )
    assert response.status_code == 204, response.text
    assert await _roles(client, owner) == {str(owner.user_id): "owner"}


# --- another organization -------------------------------------------------------------------


async def test_another_organizations_members_are_404(client):
    stranger = await register(client)
    stranger_member = await add_member(client, stranger, "member")
    me = await register(client)
    other = stranger.organization_id
    calls = [
        ("GET", members_url(other), None),
        ("PATCH", members_url(other, stranger_member.user_id), {"role": "viewer"}),
        ("DELETE", members_url(other, stranger_member.user_id), None),
        ("DELETE", members_url(other, stranger.user_id), None),
        # Their member, addressed through my organization.
        ("PATCH", members_url(me.organization_id, stranger_member.user_id), {"role": "admin"}),
        ("DELETE", members_url(me.organization_id, stranger_member.user_id), None),
    ]
    for method, url, body in calls:
        response = await client.request(method, url, json=body, headers=me.headers)
        assert_problem(response, 404)
    assert await _roles(client, stranger) == {
        str(stranger.user_id): "owner",
        str(stranger_member.user_id): "member",
    }


async def test_a_viewer_gets_404_not_403_for_another_organizations_members(client):
    stranger = await register(client)
    owner = await register(client)
    viewer = await add_member(client, owner, "viewer")
    response = await client.patch(
        members_url(stranger.organization_id, stranger.user_id),
        json={"role": "viewer"},
        headers=viewer.headers,
    )
    assert_problem(response, 404)
    invited = await client.post(
        invitations_url(stranger.organization_id),
        json={"email": viewer.email},
        headers=viewer.headers,
    )
    assert_problem(invited, 404)


async def test_member_endpoints_need_credentials(client):
    owner = await register(client)
    for method, url in (
        ("GET", members_url(owner.organization_id)),
        ("PATCH", members_url(owner.organization_id, owner.user_id)),
        ("DELETE", members_url(owner.organization_id, owner.user_id)),
    ):
        assert_problem(await client.request(method, url, json={"role": "viewer"}), 401)


async def test_removal_leaves_the_users_sessions_elsewhere_alone(client):
    owner = await register(client)
    person = await register(client)
    invitation = await invite(client, owner, person.email)
    accepted = await accept_invitation(client, person, invitation["token"])
    assert accepted.status_code == 200, accepted.text
    there = await switch(client, person, owner.organization_id)
    removed = await client.delete(
        members_url(owner.organization_id, person.user_id), headers=owner.headers
    )
    assert removed.status_code == 204, removed.text
    assert_problem(await client.get("/api/v1/users/me", headers=there.headers), 401)
    home = await client.get("/api/v1/users/me", headers=person.headers)
    assert home.status_code == 200, home.text
    assert home.json()["organization_id"] == str(person.organization_id)
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": person.refresh_token}
    )
    assert refreshed.status_code == 200, refreshed.text
