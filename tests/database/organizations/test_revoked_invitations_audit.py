"""Invitations revoked as a consequence of another change are counted in that change's audit
entry: a member's removal or demotion, and an invitation's acceptance (the others to the same
email go)."""

from __future__ import annotations

import uuid

from tests.database.organizations.audit_helpers import only_entry
from tests.helpers import (
    accept_invitation,
    add_member,
    bearer,
    create_api_key,
    invite,
    register,
    unique_email,
)


def members_url(organization_id: uuid.UUID, user_id: uuid.UUID) -> str:
    return f"/api/v1/organizations/{organization_id}/members/{user_id}"


async def test_a_removal_counts_the_invitations_sent_by_with_and_to_the_member(client):
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    await invite(client, admin, unique_email())  # sent by them
    key = await create_api_key(client, admin, "admin")
    sent_with_key = await client.post(
        f"/api/v1/organizations/{owner.organization_id}/invitations",
        json={"email": unique_email()},
        headers=bearer(key["key"]),
    )
    assert sent_with_key.status_code == 201, sent_with_key.text
    await invite(client, owner, admin.email, "owner")  # to them
    await invite(client, owner, unique_email())  # someone else's: kept
    removed = await client.delete(
        members_url(owner.organization_id, admin.user_id), headers=owner.headers
    )
    assert removed.status_code == 204, removed.text
    entry = await only_entry(client, owner, "member.removed")
    assert entry["details"] == {
        "role": "admin",
        "left": False,
        "api_keys_revoked": 1,
        "invitations_revoked": 3,
    }


async def test_a_demotion_counts_the_invitations_sent_with_the_keys_it_revokes(client):
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    key = await create_api_key(client, admin, "admin")
    sent_with_key = await client.post(
        f"/api/v1/organizations/{owner.organization_id}/invitations",
        json={"email": unique_email(), "role": "viewer"},  # within the new role: goes with the key
        headers=bearer(key["key"]),
    )
    assert sent_with_key.status_code == 201, sent_with_key.text
    await invite(client, admin, unique_email(), "viewer")  # within the new role: kept
    demoted = await client.patch(
        members_url(owner.organization_id, admin.user_id),
        json={"role": "member"},
        headers=owner.headers,
    )
    assert demoted.status_code == 200, demoted.text
    entry = await only_entry(client, owner, "member.role_changed")
    assert entry["details"] == {
        "from": "admin",
        "to": "member",
        "api_keys_revoked": 1,
        "invitations_revoked": 1,
    }


async def test_an_acceptance_counts_the_other_invitations_to_the_same_email(client):
    owner = await register(client)
    invitee = await register(client)
    accepted_one = await invite(client, owner, invitee.email, "member")
    await invite(client, owner, invitee.email, "admin")
    await invite(client, owner, invitee.email.upper(), "viewer")
    await invite(client, invitee, unique_email())  # another organization's: untouched
    accepted = await accept_invitation(client, invitee, accepted_one["token"])
    assert accepted.status_code == 200, accepted.text
    entry = await only_entry(client, owner, "invitation.accepted")
    assert entry["details"] == {
        "email": invitee.email,
        "role": "member",
        "user_id": str(invitee.user_id),
        "invitations_revoked": 2,
    }
