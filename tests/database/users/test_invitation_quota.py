"""An organization's hourly invitations count only the invitations it was allowed to send."""

from __future__ import annotations

from sqlalchemy import text

from tests.helpers import (
    add_member,
    assert_problem,
    bearer,
    create_api_key,
    invite,
    register,
    tenant_session,
    unique_email,
)


async def test_an_invitation_refused_spends_none_of_the_hour(
    client, database, runtime, monkeypatch
):
    monkeypatch.setattr(runtime.settings, "invitations_per_hour", 2)
    owner = await register(client)
    admin = await add_member(client, owner, "admin")  # the hour's first invitation
    key = await create_api_key(client, admin, "admin")
    # The key's maker gone, the key not yet revoked: as while their removal is under way.
    async with tenant_session(database, owner.organization_id) as session:
        await session.execute(
            text("DELETE FROM memberships WHERE organization_id = :o AND user_id = :u"),
            {"o": owner.organization_id, "u": admin.user_id},
        )
    refused = await client.post(
        f"/api/v1/organizations/{owner.organization_id}/invitations",
        json={"email": unique_email()},
        headers=bearer(key["key"]),
    )
    assert_problem(refused, 401)
    await invite(client, owner, unique_email())  # the second, still the organization's to send
