"""Joining an organization takes consent: an admin invites an email, and the account with that
email accepts the token, once, before it expires."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from database.organizations import crud as org_crud
from tests.helpers import (
    Account,
    accept_invitation,
    add_member,
    assert_problem,
    bearer,
    create_api_key,
    invite,
    register,
    switch,
    tenant_session,
    unique_email,
    until_waiting_for_locks,
)

ACCEPT = "/api/v1/auth/accept-invitation"


def invitations_url(organization_id: uuid.UUID, invitation_id: str | None = None) -> str:
    url = f"/api/v1/organizations/{organization_id}/invitations"
    return url if invitation_id is None else f"{url}/{invitation_id}"


async def _roles(client: httpx.AsyncClient, account: Account) -> dict[str, str]:
    response = await client.get(
        f"/api/v1/organizations/{account.organization_id}/members", headers=account.headers
    )
    assert response.status_code == 200, response.text
    return {item["user_id"]: item["role"] for item in response.json()["items"]}


async def _listed(client: httpx.AsyncClient, admin: Account) -> list[dict]:
    response = await client.get(invitations_url(admin.organization_id), headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


# --- invite and accept ----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "member", "admin", "owner"])
async def test_an_accepted_invitation_makes_a_member_with_the_invited_role(client, role):
    owner = await register(client, organization_name="Inviting")
    person = await register(client, name="Newcomer")
    invitation = await invite(client, owner, f"  {person.email.upper()} ", role)
    assert (invitation["email"], invitation["role"]) == (person.email, role)
    assert str(person.user_id) not in await _roles(client, owner)  # not before consent

    accepted = await accept_invitation(client, person, invitation["token"])
    assert accepted.status_code == 200, accepted.text
    body = accepted.json()
    assert (body["id"], body["name"], body["role"]) == (
        str(owner.organization_id),
        "Inviting",
        role,
    )
    assert (await _roles(client, owner))[str(person.user_id)] == role
    there = await switch(client, person, owner.organization_id)
    me = (await client.get("/api/v1/users/me", headers=there.headers)).json()
    assert (me["organization_id"], me["role"]) == (str(owner.organization_id), role)
    (listed,) = await _listed(client, owner)
    assert listed["accepted_by"] == str(person.user_id)
    assert listed["accepted_at"] is not None


async def test_an_invitation_waits_for_the_email_to_register(client):
    owner = await register(client)
    email = unique_email("later")
    invitation = await invite(client, owner, email, "viewer")
    person = await register(client, email=email)
    accepted = await accept_invitation(client, person, invitation["token"])
    assert accepted.status_code == 200, accepted.text
    assert (await _roles(client, owner))[str(person.user_id)] == "viewer"


async def test_the_answer_does_not_tell_whether_the_email_has_an_account(client):
    owner = await register(client)
    registered = await register(client)
    answers = [
        await client.post(
            invitations_url(owner.organization_id),
            json={"email": email, "role": "member"},
            headers=owner.headers,
        )
        for email in (registered.email, unique_email("nobody"))
    ]
    assert [answer.status_code for answer in answers] == [201, 201]
    known, unknown = (answer.json() for answer in answers)
    assert set(known) == set(unknown)
    for key in ("role", "created_by", "accepted_at", "accepted_by", "revoked_at"):
        assert known[key] == unknown[key], key
    assert str(registered.user_id) not in answers[0].text


async def test_the_default_role_is_member_and_the_expiry_is_the_setting(client, runtime):
    owner = await register(client)
    response = await client.post(
        invitations_url(owner.organization_id),
        json={"email": unique_email()},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["role"] == "member"
    assert body["created_by"] == str(owner.user_id)
    lifetime = datetime.fromisoformat(body["expires_at"]) - datetime.fromisoformat(
        body["created_at"]
    )
    expected = timedelta(hours=runtime.settings.invitation_hours)
    assert abs(lifetime - expected) < timedelta(minutes=1)


async def test_the_token_is_shown_once_and_stored_as_a_hash(client, database):
    owner = await register(client)
    invitation = await invite(client, owner, unique_email())
    token = invitation["token"]
    listed = await client.get(invitations_url(owner.organization_id), headers=owner.headers)
    assert listed.json()["total"] == 1
    assert "token" not in listed.json()["items"][0]
    assert token not in listed.text
    async with tenant_session(database, owner.organization_id) as session:
        row = (await session.execute(text("SELECT * FROM invitations"))).mappings().one()
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(dict(row))


async def test_the_list_is_paginated_newest_first(client):
    owner = await register(client)
    emails = [unique_email() for _ in range(3)]
    for email in emails:
        await invite(client, owner, email)
    page = await client.get(
        invitations_url(owner.organization_id),
        params={"limit": 2, "offset": 1},
        headers=owner.headers,
    )
    assert page.status_code == 200, page.text
    body = page.json()
    assert (body["total"], body["limit"], body["offset"]) == (3, 2, 1)
    assert [item["email"] for item in body["items"]] == [emails[1], emails[0]]


# --- what cannot be accepted: one 404 for all -----------------------------------------------


async def test_a_token_works_once(client):
    owner = await register(client)
    person = await register(client)
    invitation = await invite(client, owner, person.email, "admin")
    assert (await accept_invitation(client, person, invitation["token"])).status_code == 200
    again = await accept_invitation(client, person, invitation["token"])
    assert_problem(again, 404)


async def test_an_expired_invitation_is_404(client, database):
    owner = await register(client)
    person = await register(client)
    invitation = await invite(client, owner, person.email)
    async with tenant_session(database, owner.organization_id) as session:
        await session.execute(
            text("UPDATE invitations SET expires_at = now() - interval '1 second'")
        )
    assert_problem(await accept_invitation(client, person, invitation["token"]), 404)
    assert str(person.user_id) not in await _roles(client, owner)


async def test_a_revoked_invitation_is_404(client):
    owner = await register(client)
    person = await register(client)
    invitation = await invite(client, owner, person.email)
    url = invitations_url(owner.organization_id, invitation["id"])
    for _ in range(2):  # revoking again is no error
        revoked = await client.delete(url, headers=owner.headers)
        assert revoked.status_code == 204, revoked.text
    assert (await _listed(client, owner))[0]["revoked_at"] is not None
    assert_problem(await accept_invitation(client, person, invitation["token"]), 404)
    assert str(person.user_id) not in await _roles(client, owner)


async def test_only_an_owner_revokes_an_invitation_to_be_an_owner(client):
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    to_own = await invite(client, owner, unique_email(), "owner")
    to_administer = await invite(client, owner, unique_email(), "admin")
    refused = await client.delete(
        invitations_url(owner.organization_id, to_own["id"]), headers=admin.headers
    )
    assert "owner" in assert_problem(refused, 403)["detail"]
    key = await create_api_key(client, admin, "admin")
    by_key = await client.delete(
        invitations_url(owner.organization_id, to_own["id"]), headers=bearer(key["key"])
    )
    assert_problem(by_key, 403)
    allowed = await client.delete(
        invitations_url(owner.organization_id, to_administer["id"]), headers=admin.headers
    )
    assert allowed.status_code == 204, allowed.text
    revoked = {item["id"]: item["revoked_at"] is not None for item in await _listed(client, owner)}
    assert (revoked[to_own["id"]], revoked[to_administer["id"]]) == (False, True)


async def test_an_invitation_accepted_while_being_revoked_is_a_409(client, monkeypatch):
    owner, person = await register(client), await register(client)
    invitation = await invite(client, owner, person.email)
    revoke = org_crud.revoke_invitation

    async def accepted_first(session, organization_id, invitation_id):
        # The invitee's acceptance commits between the invitation's read and its revoking.
        await session.execute(
            text("UPDATE invitations SET accepted_at = now(), accepted_by = :user WHERE id = :id"),
            {"user": person.user_id, "id": invitation_id},
        )
        return await revoke(session, organization_id, invitation_id)

    monkeypatch.setattr(org_crud, "revoke_invitation", accepted_first)
    response = await client.delete(
        invitations_url(owner.organization_id, invitation["id"]), headers=owner.headers
    )
    assert_problem(response, 409)


async def test_another_accounts_invitation_is_404_and_stays_theirs(client):
    owner = await register(client)
    invited, other = await register(client), await register(client)
    invitation = await invite(client, owner, invited.email)
    wrong = await accept_invitation(client, other, invitation["token"])
    unknown = await accept_invitation(client, other, "assay_inv_no-such-invitation")
    assert assert_problem(wrong, 404)["detail"] == assert_problem(unknown, 404)["detail"]
    assert str(other.user_id) not in await _roles(client, owner)
    # The failed attempt spent nothing: the invitee still accepts.
    assert (await accept_invitation(client, invited, invitation["token"])).status_code == 200


async def test_a_member_accepting_again_is_409_and_keeps_their_role(client):
    owner = await register(client)
    viewer = await add_member(client, owner, "viewer")
    invitation = await invite(client, owner, viewer.email, "admin")
    assert_problem(await accept_invitation(client, viewer, invitation["token"]), 409)
    assert (await _roles(client, owner))[str(viewer.user_id)] == "viewer"
    assert (await _listed(client, owner))[0]["accepted_at"] is None


async def test_an_api_key_cannot_accept(client):
    owner, stranger = await register(client), await register(client)
    invitation = await invite(client, owner, stranger.email)
    key = await create_api_key(client, stranger, "admin")
    response = await client.post(
        ACCEPT, json={"token": invitation["token"]}, headers=bearer(key["key"])
    )
    assert_problem(response, 403)


async def test_revoking_an_accepted_invitation_is_409(client):
    owner = await register(client)
    person = await register(client)
    invitation = await invite(client, owner, person.email)
    assert (await accept_invitation(client, person, invitation["token"])).status_code == 200
    response = await client.delete(
        invitations_url(owner.organization_id, invitation["id"]), headers=owner.headers
    )
    assert_problem(response, 409)


async def test_removing_a_member_revokes_their_unanswered_invitations(client):
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    person = await register(client)
    invitation = await invite(client, admin, person.email)
    removed = await client.delete(
        f"/api/v1/organizations/{owner.organization_id}/members/{admin.user_id}",
        headers=owner.headers,
    )
    assert removed.status_code == 204, removed.text
    assert_problem(await accept_invitation(client, person, invitation["token"]), 404)


async def test_joining_spends_every_other_invitation_to_the_same_email(client):
    """A resent invitation, accepted, left the first usable: after removal, or after leaving,
    it brought the account back, with whatever role it named (a viewer took an admin one)."""
    owner = await register(client)
    person = await register(client)
    admin_invitation = await invite(client, owner, person.email.upper(), "admin")
    viewer_invitation = await invite(client, owner, person.email, "viewer")
    assert (await accept_invitation(client, person, viewer_invitation["token"])).status_code == 200
    listed = {item["id"]: item for item in await _listed(client, owner)}
    assert listed[admin_invitation["id"]]["revoked_at"] is not None
    member = await switch(client, person, owner.organization_id)
    left = await client.delete(
        f"/api/v1/organizations/{owner.organization_id}/members/{person.user_id}",
        headers=member.headers,
    )
    assert left.status_code == 204, left.text
    assert_problem(await accept_invitation(client, person, admin_invitation["token"]), 404)
    assert str(person.user_id) not in await _roles(client, owner)


async def test_two_invitations_to_one_account_accepted_at_once_join_it_once(
    committed_client, owner_engine
):
    """Each spent its own invitation, then waited on the other's (to revoke it), while the
    other waited on its membership: a deadlock, a 409 asking to send it again, and then a
    404. Taken one after the other: the first joins, the second finds its invitation spent."""
    client = committed_client
    owner, person = await register(client), await register(client)
    first = await invite(client, owner, person.email, "member")
    second = await invite(client, owner, person.email, "admin")
    async with owner_engine.connect() as holder:
        held = await holder.begin()
        await holder.execute(
            text("SELECT set_config('app.organization_id', :org, true)"),
            {"org": str(owner.organization_id)},
        )
        await holder.execute(
            text("SELECT FROM invitations WHERE id = :id FOR UPDATE"), {"id": first["id"]}
        )
        accepting_first = asyncio.create_task(accept_invitation(client, person, first["token"]))
        await until_waiting_for_locks(owner_engine, 1)
        accepting_second = asyncio.create_task(accept_invitation(client, person, second["token"]))
        await until_waiting_for_locks(owner_engine, 2)
        await held.rollback()
    assert (await accepting_first).status_code == 200
    assert_problem(await accepting_second, 404)
    assert (await _roles(client, owner))[str(person.user_id)] == "member"


async def test_removing_a_member_spends_the_invitations_sent_to_them(client):
    owner = await register(client)
    person = await register(client)
    first = await invite(client, owner, person.email, "member")
    assert (await accept_invitation(client, person, first["token"])).status_code == 200
    later = await invite(client, owner, person.email, "member")  # to a member: 409 if accepted
    removed = await client.delete(
        f"/api/v1/organizations/{owner.organization_id}/members/{person.user_id}",
        headers=owner.headers,
    )
    assert removed.status_code == 204, removed.text
    assert_problem(await accept_invitation(client, person, later["token"]), 404)
    assert str(person.user_id) not in await _roles(client, owner)
    # Invited again after the removal, they may come back.
    again = await invite(client, owner, person.email, "viewer")
    assert (await accept_invitation(client, person, again["token"])).status_code == 200


# --- who may invite -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
async def test_an_admin_invites_up_to_admin_but_not_an_owner(client, role):
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    person = await register(client)
    invitation = await invite(client, admin, person.email, role)
    assert (await accept_invitation(client, person, invitation["token"])).status_code == 200
    assert (await _roles(client, owner))[str(person.user_id)] == role
    refused = await client.post(
        invitations_url(owner.organization_id),
        json={"email": unique_email(), "role": "owner"},
        headers=admin.headers,
    )
    assert_problem(refused, 403)
    assert "owner" not in {item["role"] for item in await _listed(client, owner)}


@pytest.mark.parametrize("role", ["viewer", "member"])
async def test_viewers_and_members_cannot_invite_or_list(client, role):
    owner = await register(client)
    caller = await add_member(client, owner, role)
    key = await create_api_key(client, owner, role)
    invitation = await invite(client, owner, unique_email())
    before = await _listed(client, owner)
    for headers in (caller.headers, bearer(key["key"])):
        created = await client.post(
            invitations_url(owner.organization_id),
            json={"email": unique_email(), "role": "viewer"},
            headers=headers,
        )
        assert_problem(created, 403)
        listed = await client.get(invitations_url(owner.organization_id), headers=headers)
        assert_problem(listed, 403)
        revoked = await client.delete(
            invitations_url(owner.organization_id, invitation["id"]), headers=headers
        )
        assert_problem(revoked, 403)
    assert await _listed(client, owner) == before


async def test_an_admin_api_key_invites_but_not_owners(client):
    owner = await register(client)
    key = bearer((await create_api_key(client, owner, "admin"))["key"])
    url = invitations_url(owner.organization_id)
    ok = await client.post(url, json={"email": unique_email(), "role": "admin"}, headers=key)
    assert ok.status_code == 201, ok.text
    assert ok.json()["created_by"] == str(owner.user_id)  # whom the key answers to
    owner_role = {"email": unique_email(), "role": "owner"}
    assert_problem(await client.post(url, json=owner_role, headers=key), 403)


async def test_another_organizations_invitations_are_404(client):
    owner = await register(client)
    invitation = await invite(client, owner, unique_email())
    stranger = await register(client)
    calls = [
        ("GET", invitations_url(owner.organization_id), None),
        ("POST", invitations_url(owner.organization_id), {"email": unique_email()}),
        ("DELETE", invitations_url(owner.organization_id, invitation["id"]), None),
        # Their invitation, addressed through my organization.
        ("DELETE", invitations_url(stranger.organization_id, invitation["id"]), None),
    ]
    for method, url, body in calls:
        response = await client.request(method, url, json=body, headers=stranger.headers)
        assert_problem(response, 404)
    (listed,) = await _listed(client, owner)
    assert listed["revoked_at"] is None


async def test_invitations_need_credentials(client):
    owner = await register(client)
    invitation = await invite(client, owner, unique_email())
    calls = [
        ("GET", invitations_url(owner.organization_id), None),
        ("POST", invitations_url(owner.organization_id), {"email": unique_email()}),
        ("DELETE", invitations_url(owner.organization_id, invitation["id"]), None),
        ("POST", ACCEPT, {"token": invitation["token"]}),
    ]
    for method, url, body in calls:
        assert_problem(await client.request(method, url, json=body), 401)


async def test_an_organization_sends_a_limited_number_an_hour(client, runtime, monkeypatch):
    monkeypatch.setattr(runtime.settings, "invitations_per_hour", 2)
    owner, other = await register(client), await register(client)
    for _ in range(2):
        await invite(client, owner, unique_email())
    limited = await client.post(
        invitations_url(owner.organization_id),
        json={"email": unique_email()},
        headers=owner.headers,
    )
    assert_problem(limited, 429)
    assert int(limited.headers["retry-after"]) > 0
    assert len(await _listed(client, owner)) == 2
    await invite(client, other, unique_email())  # each organization has its own count


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": ""}, "email"),
        ({"email": "x" * 320 + "@example.com"}, "email"),
        ({"email": "ada\ud800@example.com"}, "email"),
        ({"email": "ada\x00@example.com"}, "email"),
        ({}, "email"),
        ({"email": "ok@example.com", "role": "superuser"}, "role"),
        ({"email": "ok@example.com", "user_id": str(uuid.uuid4())}, "user_id"),
    ],
)
async def test_create_refuses_bad_bodies_naming_the_field(client, body, field):
    owner = await register(client)
    response = await _post_json(client, invitations_url(owner.organization_id), body, owner)
    assert_problem(response, 422, field=field)
    assert await _listed(client, owner) == []


@pytest.mark.parametrize(
    "body", [{}, {"token": ""}, {"token": "x" * 201}, {"token": "assay_inv_\ud800"}]
)
async def test_accept_refuses_bad_bodies(client, body):
    person = await register(client)
    assert_problem(await _post_json(client, ACCEPT, body, person), 422, field="token")


async def _post_json(
    client: httpx.AsyncClient, url: str, body: dict, account: Account
) -> httpx.Response:
    """json.dumps escapes a lone surrogate (\\ud800): valid JSON, not UTF-8."""
    headers = {**account.headers, "content-type": "application/json"}
    return await client.post(url, content=json.dumps(body), headers=headers)
