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
)

ORGS = "/api/v1/organizations"


def org_url(organization_id: uuid.UUID | str, suffix: str = "") -> str:
    return f"{ORGS}/{organization_id}{suffix}"


async def _create_org(client: httpx.AsyncClient, account: Account, name: str) -> dict:
    response = await client.post(ORGS, json={"name": name}, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def _join(client: httpx.AsyncClient, owner: Account, person: Account, role: str) -> None:
    """Has an existing account join owner's organization (invited, and accepting)."""
    invitation = await invite(client, owner, person.email, role)
    response = await accept_invitation(client, person, invitation["token"])
    assert response.status_code == 200, response.text


# --- list -----------------------------------------------------------------------------------


async def test_list_shows_every_organization_you_belong_to_with_your_role(client):
    me = await register(client, organization_name="Mine")
    second = await _create_org(client, me, "Second")
    stranger = await register(client, organization_name="Theirs")
    await _join(client, stranger, me, "viewer")
    unrelated = await register(client, organization_name="Unrelated")

    response = await client.get(ORGS, headers=me.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 3
    assert body["limit"] == 50
    assert body["offset"] == 0
    roles = {item["id"]: (item["name"], item["role"]) for item in body["items"]}
    assert roles == {
        str(me.organization_id): ("Mine", "owner"),
        second["id"]: ("Second", "owner"),
        str(stranger.organization_id): ("Theirs", "viewer"),
    }
    assert str(unrelated.organization_id) not in roles
    for item in body["items"]:
        assert set(item) == {"id", "name", "role", "created_at", "updated_at"}


async def test_list_paginates_with_limit_offset_and_total(client):
    me = await register(client, organization_name="Org 0")
    for number in range(1, 5):
        await _create_org(client, me, f"Org {number}")

    seen: list[str] = []
    for offset in (0, 2, 4):
        response = await client.get(ORGS, params={"limit": 2, "offset": offset}, headers=me.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["total"] == 5
        assert (body["limit"], body["offset"]) == (2, offset)
        seen += [item["name"] for item in body["items"]]
        assert len(body["items"]) == (2 if offset < 4 else 1)
    assert seen == [f"Org {number}" for number in range(5)]

    beyond = (await client.get(ORGS, params={"offset": 10}, headers=me.headers)).json()
    assert beyond["items"] == []
    assert beyond["total"] == 5


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"limit": 201}, "limit"), ({"offset": -1}, "offset")],
)
async def test_list_refuses_bad_pagination(client, params, field):
    me = await register(client)
    assert_problem(await client.get(ORGS, params=params, headers=me.headers), 422, field=field)


async def test_list_with_an_api_key_shows_only_its_organization(client):
    owner = await register(client, organization_name="Keyed")
    await _create_org(client, owner, "Not for the key")
    key = await create_api_key(client, owner, "viewer")
    response = await client.get(ORGS, headers=bearer(key["key"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 1
    assert [(item["id"], item["name"], item["role"]) for item in body["items"]] == [
        (str(owner.organization_id), "Keyed", "viewer")
    ]


async def test_list_needs_credentials(client):
    assert_problem(await client.get(ORGS), 401)


# --- create ---------------------------------------------------------------------------------


async def test_create_makes_you_the_owner_of_a_new_organization(client):
    me = await register(client, organization_name="First")
    response = await client.post(ORGS, json={"name": "  Second  "}, headers=me.headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"] == "Second"
    assert created["role"] == "owner"
    new_id = uuid.UUID(created["id"])
    assert new_id != me.organization_id

    # The token stays in its organization; the new one is reached by switching.
    assert_problem(await client.get(org_url(new_id), headers=me.headers), 404)
    there = await switch(client, me, new_id)
    read = await client.get(org_url(new_id), headers=there.headers)
    assert read.status_code == 200, read.text
    assert read.json()["role"] == "owner"
    members = (await client.get(org_url(new_id, "/members"), headers=there.headers)).json()
    assert [(m["user_id"], m["role"]) for m in members["items"]] == [(str(me.user_id), "owner")]
    # The original organization is untouched.
    mine = (await client.get(org_url(me.organization_id), headers=me.headers)).json()
    assert mine["name"] == "First"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Acme", "plan": "enterprise"}, "plan"),
        ({"name": "Acme", "id": str(uuid.uuid4())}, "id"),
        ({"name": "x" * 201}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 42}, "name"),
        ({}, "name"),
    ],
)
async def test_create_refuses_bad_bodies_naming_the_field_and_writes_nothing(client, body, field):
    me = await register(client)
    before = (await client.get(ORGS, headers=me.headers)).json()["total"]
    problem = assert_problem(
        await client.post(ORGS, json=body, headers=me.headers), 422, field=field
    )
    assert field in problem["detail"]
    after = (await client.get(ORGS, headers=me.headers)).json()["total"]
    assert after == before


async def test_an_account_creates_a_limited_number_an_hour(client, runtime, monkeypatch):
    """Each organization has its own limits (invitations, a share of the workers): an account
    creating them without end would have as many shares as it liked."""
    monkeypatch.setattr(runtime.settings, "organizations_per_hour", 2)
    me, other = await register(client), await register(client)
    for name in ("One", "Two"):
        created = await client.post(ORGS, json={"name": name}, headers=me.headers)
        assert created.status_code == 201, created.text
    limited = await client.post(ORGS, json={"name": "Three"}, headers=me.headers)
    assert_problem(limited, 429)
    assert int(limited.headers["retry-after"]) > 0
    listed = (await client.get(ORGS, headers=me.headers)).json()
    assert listed["total"] == 3  # their own, and the two: nothing written for the third
    assert "Three" not in {organization["name"] for organization in listed["items"]}
    theirs = await client.post(ORGS, json={"name": "Three"}, headers=other.headers)
    assert theirs.status_code == 201, theirs.text  # each account has its own count


async def test_create_accepts_a_name_of_exactly_200_characters(client):
    me = await register(client)
    created = await _create_org(client, me, "x" * 200)
    assert created["name"] == "x" * 200


async def test_create_needs_a_user_not_an_api_key(client):
    owner = await register(client)
    key = await create_api_key(client, owner, "admin")
    response = await client.post(ORGS, json={"name": "By key"}, headers=bearer(key["key"]))
    assert_problem(response, 403)
    orgs = (await client.get(ORGS, headers=owner.headers)).json()
    assert orgs["total"] == 1


async def test_create_needs_credentials(client):
    assert_problem(await client.post(ORGS, json={"name": "Anon"}), 401)


# --- read -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
async def test_every_member_reads_the_organization_with_their_role(client, role):
    owner = await register(client, organization_name="Readable")
    person = await add_member(client, owner, role)
    response = await client.get(org_url(owner.organization_id), headers=person.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == str(owner.organization_id)
    assert body["name"] == "Readable"
    assert body["role"] == role


async def test_read_as_owner(client):
    owner = await register(client, organization_name="Owned")
    body = (await client.get(org_url(owner.organization_id), headers=owner.headers)).json()
    assert (body["name"], body["role"]) == ("Owned", "owner")


async def test_read_needs_credentials(client):
    owner = await register(client)
    assert_problem(await client.get(org_url(owner.organization_id)), 401)


async def test_read_with_a_malformed_id_is_422(client):
    owner = await register(client)
    assert_problem(await client.get(org_url("not-a-uuid"), headers=owner.headers), 422)


# --- another organization is a 404 ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"name": "Hijacked"}),
        ("DELETE", "", None),
        ("POST", "/transfer-ownership", "USER"),
    ],
)
async def test_another_organization_is_404_for_everyone(client, method, suffix, body):
    stranger = await register(client, organization_name="Theirs")
    me = await register(client)
    viewer = await add_member(client, me, "viewer")
    json = {"user_id": str(me.user_id)} if body == "USER" else body
    for target in (stranger.organization_id, uuid.uuid4()):
        for caller in (me, viewer):  # a viewer gets 404 too, never 403
            response = await client.request(
                method, org_url(target, suffix), json=json, headers=caller.headers
            )
            assert_problem(response, 404)
    read = await client.get(org_url(stranger.organization_id), headers=stranger.headers)
    assert read.status_code == 200
    assert read.json()["name"] == "Theirs"


async def test_an_organization_you_belong_to_is_404_until_you_switch_to_it(client):
    other = await register(client, organization_name="Other")
    me = await register(client)
    await _join(client, other, me, "admin")
    response = await client.patch(
        org_url(other.organization_id), json={"name": "Renamed"}, headers=me.headers
    )
    assert_problem(response, 404)
    there = await switch(client, me, other.organization_id)
    renamed = await client.patch(
        org_url(other.organization_id), json={"name": "Renamed"}, headers=there.headers
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["role"] == "admin"


async def test_an_api_key_cannot_reach_another_organization(client):
    owner = await register(client)
    stranger = await register(client)
    key = await create_api_key(client, owner, "admin")
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(
            method,
            org_url(stranger.organization_id),
            json={"name": "x"} if method == "PATCH" else None,
            headers=bearer(key["key"]),
        )
        assert_problem(response, 404)


# --- patch ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "admin"])
async def test_owner_and_admin_rename_the_organization(client, role):
    owner = await register(client, organization_name="Before")
    caller = owner if role == "owner" else await add_member(client, owner, "admin")
    viewer = await add_member(client, owner, "viewer")
    response = await client.patch(
        org_url(owner.organization_id), json={"name": " After "}, headers=caller.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "After"
    assert response.json()["role"] == role
    seen = (await client.get(org_url(owner.organization_id), headers=viewer.headers)).json()
    assert seen["name"] == "After"


async def test_patch_with_an_empty_body_changes_nothing(client):
    owner = await register(client, organization_name="Same")
    response = await client.patch(org_url(owner.organization_id), json={}, headers=owner.headers)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Same"


@pytest.mark.parametrize("role", ["viewer", "member"])
async def test_viewer_and_member_cannot_rename(client, role):
    owner = await register(client, organization_name="Stable")
    person = await add_member(client, owner, role)
    response = await client.patch(
        org_url(owner.organization_id), json={"name": "Changed"}, headers=person.headers
    )
    assert_problem(response, 403)
    read = await client.get(org_url(owner.organization_id), headers=owner.headers)
    assert read.json()["name"] == "Stable"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x" * 201}, "name"),
        ({"name": ""}, "name"),
        ({"name": "Ok", "owner_id": str(uuid.uuid4())}, "owner_id"),
    ],
)
async def test_patch_refuses_bad_bodies(client, body, field):
    owner = await register(client, organization_name="Kept")
    response = await client.patch(org_url(owner.organization_id), json=body, headers=owner.headers)
    assert_problem(response, 422, field=field)
    read = await client.get(org_url(owner.organization_id), headers=owner.headers)
    assert read.json()["name"] == "Kept"


async def test_patch_with_api_keys_follows_the_key_role(client):
    owner = await register(client, organization_name="Keys")
    admin_key = await create_api_key(client, owner, "admin")
    viewer_key = await create_api_key(client, owner, "viewer")
    member_key = await create_api_key(client, owner, "member")
    url = org_url(owner.organization_id)
    for key in (viewer_key, member_key):
        assert_problem(
            await client.patch(url, json={"name": "No"}, headers=bearer(key["key"])), 403
        )
    ok = await client.patch(url, json={"name": "By key"}, headers=bearer(admin_key["key"]))
    assert ok.status_code == 200, ok.text
    assert ok.json()["role"] == "admin"
    assert (await client.get(url, headers=owner.headers)).json()["name"] == "By key"


# --- delete ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
async def test_only_the_owner_deletes_the_organization(client, role):
    owner = await register(client, organization_name="Survivor")
    person = await add_member(client, owner, role)
    response = await client.delete(org_url(owner.organization_id), headers=person.headers)
    assert_problem(response, 403)
    read = await client.get(org_url(owner.organization_id), headers=owner.headers)
    assert read.status_code == 200
    assert read.json()["name"] == "Survivor"


async def test_an_admin_api_key_cannot_delete_the_organization(client):
    owner = await register(client)
    key = await create_api_key(client, owner, "admin")
    response = await client.delete(org_url(owner.organization_id), headers=bearer(key["key"]))
    assert_problem(response, 403)
    assert (
        await client.get(org_url(owner.organization_id), headers=owner.headers)
    ).status_code == 200


async def test_owner_deletes_the_organization_and_everything_in_it(client, database):
    owner = await register(client, organization_name="Doomed")
    other_org = await _create_org(client, owner, "Kept")
    member = await add_member(client, owner, "admin")
    key = await create_api_key(client, owner, "viewer")
    neighbour = await register(client, organization_name="Neighbour")

    response = await client.delete(org_url(owner.organization_id), headers=owner.headers)
    assert response.status_code == 204, response.text
    assert response.content == b""

    # Every credential into it dies at once.
    for headers in (owner.headers, member.headers, bearer(key["key"])):
        assert_problem(await client.get(org_url(owner.organization_id), headers=headers), 401)
    refresh = await client.post("/api/v1/auth/refresh", json={"refresh_token": owner.refresh_token})
    assert_problem(refresh, 401)

    # Its rows are gone; the cascade reached members, sessions and keys.
    async with tenant_session(database, owner.organization_id, owner.user_id) as session:
        for table in ("organizations", "memberships", "api_keys"):
            column = "id" if table == "organizations" else "organization_id"
            count = await session.scalar(
                text(f"SELECT count(*) FROM {table} WHERE {column} = :org"),
                {"org": owner.organization_id},
            )
            assert count == 0, table
        sessions = await session.scalar(
            text("SELECT count(*) FROM auth_sessions WHERE organization_id = :org"),
            {"org": owner.organization_id},
        )
        assert sessions == 0

    # The people and their other organizations remain.
    relogin = await login(client, owner.email)
    assert relogin.status_code == 200, relogin.text
    orgs = await client.get(ORGS, headers=bearer(relogin.json()["access_token"]))
    assert [item["id"] for item in orgs.json()["items"]] == [other_org["id"]]
    member_login = await login(client, member.email)
    assert member_login.status_code == 200
    neighbour_read = await client.get(org_url(neighbour.organization_id), headers=neighbour.headers)
    assert neighbour_read.json()["name"] == "Neighbour"


# --- transfer ownership ---------------------------------------------------------------------


async def test_owner_transfers_ownership_and_becomes_admin(client):
    owner = await register(client)
    heir = await add_member(client, owner, "member")
    url = org_url(owner.organization_id, "/transfer-ownership")
    response = await client.post(url, json={"user_id": str(heir.user_id)}, headers=owner.headers)
    assert response.status_code == 200, response.text
    roles = {item["user_id"]: item["role"] for item in response.json()}
    assert roles == {str(heir.user_id): "owner", str(owner.user_id): "admin"}

    members = (
        await client.get(org_url(owner.organization_id, "/members"), headers=owner.headers)
    ).json()
    assert {m["user_id"]: m["role"] for m in members["items"]} == roles

    # The former owner's token (which still claims "owner") has only admin rights now.
    assert_problem(await client.delete(org_url(owner.organization_id), headers=owner.headers), 403)
    back = await client.post(url, json={"user_id": str(owner.user_id)}, headers=owner.headers)
    assert_problem(back, 403)
    me = (await client.get("/api/v1/users/me", headers=owner.headers)).json()
    assert me["role"] == "admin"
    # The heir's existing token has owner rights at once.
    assert (await client.get("/api/v1/users/me", headers=heir.headers)).json()["role"] == "owner"
    handed_back = await client.post(url, json={"user_id": str(owner.user_id)}, headers=heir.headers)
    assert handed_back.status_code == 200, handed_back.text


@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
async def test_only_the_owner_transfers_ownership(client, role):
    owner = await register(client)
    person = await add_member(client, owner, role)
    response = await client.post(
        org_url(owner.organization_id, "/transfer-ownership"),
        json={"user_id": str(person.user_id)},
        headers=person.headers,
    )
    assert_problem(response, 403)
    members = (
        await client.get(org_url(owner.organization_id, "/members"), headers=owner.headers)
    ).json()
    assert {m["user_id"]: m["role"] for m in members["items"]} == {
        str(owner.user_id): "owner",
        str(person.user_id): role,
    }


async def test_an_api_key_cannot_transfer_ownership(client):
    owner = await register(client)
    heir = await add_member(client, owner, "admin")
    key = await create_api_key(client, owner, "admin")
    response = await client.post(
        org_url(owner.organization_id, "/transfer-ownership"),
        json={"user_id": str(heir.user_id)},
        headers=bearer(key["key"]),
    )
    assert_problem(response, 403)


async def test_transfer_to_yourself_is_409_and_to_a_non_member_is_404(client):
    owner = await register(client)
    stranger = await register(client)
    url = org_url(owner.organization_id, "/transfer-ownership")
    assert_problem(
        await client.post(url, json={"user_id": str(owner.user_id)}, headers=owner.headers), 409
    )
    for user_id in (stranger.user_id, uuid.uuid4()):
        response = await client.post(url, json={"user_id": str(user_id)}, headers=owner.headers)
        assert_problem(response, 404)
    # Nothing changed: still the only member, still the owner.
    members = (
        await client.get(org_url(owner.organization_id, "/members"), headers=owner.headers)
    ).json()
    assert [(m["user_id"], m["role"]) for m in members["items"]] == [(str(owner.user_id), "owner")]
    stranger_orgs = (await client.get(ORGS, headers=stranger.headers)).json()
    assert stranger_orgs["total"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "user_id"), ({"user_id": "nope"}, "user_id"), ({"user_id": "USER", "x": 1}, "x")],
)
async def test_transfer_refuses_bad_bodies(client, body, field):
    owner = await register(client)
    heir = await add_member(client, owner, "admin")
    if body.get("user_id") == "USER":
        body = {**body, "user_id": str(heir.user_id)}
    response = await client.post(
        org_url(owner.organization_id, "/transfer-ownership"), json=body, headers=owner.headers
    )
    assert_problem(response, 422, field=field)
    assert (await client.get("/api/v1/users/me", headers=heir.headers)).json()["role"] == "admin"
