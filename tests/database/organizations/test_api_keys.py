from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from tests.helpers import (
    accept_invitation,
    add_member,
    assert_problem,
    bearer,
    create_api_key,
    register,
    tenant_session,
    unique_email,
)


def keys_url(organization_id: uuid.UUID, key_id: uuid.UUID | str | None = None) -> str:
    url = f"/api/v1/organizations/{organization_id}/api-keys"
    return url if key_id is None else f"{url}/{key_id}"


def org_url(organization_id: uuid.UUID) -> str:
    return f"/api/v1/organizations/{organization_id}"


# --- create ---------------------------------------------------------------------------------


async def test_create_returns_the_secret_once_with_its_metadata(client):
    owner = await register(client)
    response = await client.post(
        keys_url(owner.organization_id),
        json={"name": " CI pipeline ", "role": "viewer"},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "CI pipeline"
    assert body["role"] == "viewer"
    assert body["key"].startswith("assay_")
    assert len(body["key"]) > 30
    assert body["key"].startswith(body["display_prefix"])
    assert len(body["display_prefix"]) < len(body["key"]) // 2
    assert body["created_by"] == str(owner.user_id)
    assert body["expires_at"] is None
    assert body["last_used_at"] is None
    assert body["revoked_at"] is None
    uuid.UUID(body["id"])


async def test_the_default_role_is_member(client):
    owner = await register(client)
    response = await client.post(
        keys_url(owner.organization_id), json={"name": "default"}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["role"] == "member"


async def test_every_key_is_different(client):
    owner = await register(client)
    keys = [(await create_api_key(client, owner))["key"] for _ in range(3)]
    assert len(set(keys)) == 3


async def test_the_secret_is_never_shown_again(client):
    owner = await register(client)
    created = await create_api_key(client, owner, "admin")
    listed = await client.get(keys_url(owner.organization_id), headers=owner.headers)
    read = await client.get(keys_url(owner.organization_id, created["id"]), headers=owner.headers)
    for response in (listed, read):
        assert response.status_code == 200, response.text
        assert created["key"] not in response.text
    [item] = listed.json()["items"]
    assert "key" not in item
    assert "key" not in read.json()
    assert "key_hash" not in item
    assert "key_hash" not in read.json()
    expected = {k: v for k, v in created.items() if k != "key"}
    assert item == expected
    assert read.json() == expected


async def test_the_database_stores_only_a_hash(client, database):
    owner = await register(client)
    created = await create_api_key(client, owner, "member")
    secret = created["key"]
    async with tenant_session(database, owner.organization_id) as session:
        rows = (await session.execute(text("SELECT * FROM api_keys"))).mappings().all()
    assert len(rows) == 1
    [row] = rows
    for column, value in row.items():
        assert secret not in str(value), column
    assert row["key_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert str(row["id"]) == created["id"]
    assert row["organization_id"] == owner.organization_id


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "k", "expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "k", "expires_at": "PAST"}, "expires_at"),
        ({"name": "k", "expires_at": "2999-01-01T00:00:00"}, "expires_at"),
        ({"name": "k", "expires_at": "soon"}, "expires_at"),
        ({"name": "k", "expires_at": "9999-12-31T23:59:59-14:00"}, "expires_at"),
        ({"name": "k", "role": "owner"}, "role"),
        ({"name": "k", "role": "root"}, "role"),
        ({"name": "x" * 201}, "name"),
        ({"name": ""}, "name"),
        ({}, "name"),
        ({"name": "k", "key": "assay_chosen-by-me"}, "key"),
        ({"name": "k", "organization_id": str(uuid.uuid4())}, "organization_id"),
    ],
)
async def test_create_refuses_bad_bodies_and_writes_nothing(client, body, field):
    owner = await register(client)
    if body.get("expires_at") == "PAST":
        body = {**body, "expires_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}
    response = await client.post(keys_url(owner.organization_id), json=body, headers=owner.headers)
    problem = assert_problem(response, 422, field=field)
    if field == "expires_at" and body["expires_at"] != "soon":
        assert any(word in problem["detail"] for word in ("timezone", "future", "9999"))
    listed = (await client.get(keys_url(owner.organization_id), headers=owner.headers)).json()
    assert listed["total"] == 0


async def test_a_key_with_a_future_expiry_works(client):
    owner = await register(client)
    expires = datetime.now(UTC) + timedelta(days=30)
    created = await create_api_key(client, owner, "viewer", expires_at=expires.isoformat())
    assert datetime.fromisoformat(created["expires_at"]) == expires
    response = await client.get(org_url(owner.organization_id), headers=bearer(created["key"]))
    assert response.status_code == 200, response.text


async def test_an_expiry_in_another_timezone_is_kept_as_the_same_instant(client):
    owner = await register(client)
    created = await create_api_key(client, owner, expires_at="2999-06-01T12:00:00+02:00")
    assert datetime.fromisoformat(created["expires_at"]) == datetime(2999, 6, 1, 10, tzinfo=UTC)


# --- who manages keys -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "admin"])
async def test_owner_and_admin_manage_keys(client, role):
    owner = await register(client)
    caller = owner if role == "owner" else await add_member(client, owner, "admin")
    created = await create_api_key(client, caller, "admin")
    assert created["created_by"] == str(caller.user_id)
    listed = await client.get(keys_url(owner.organization_id), headers=caller.headers)
    assert listed.json()["total"] == 1
    read = await client.get(keys_url(owner.organization_id, created["id"]), headers=caller.headers)
    assert read.status_code == 200
    revoked = await client.delete(
        keys_url(owner.organization_id, created["id"]), headers=caller.headers
    )
    assert revoked.status_code == 204, revoked.text


@pytest.mark.parametrize("role", ["viewer", "member"])
async def test_viewer_and_member_cannot_touch_keys(client, role):
    owner = await register(client)
    person = await add_member(client, owner, role)
    existing = await create_api_key(client, owner, "viewer")
    org = owner.organization_id
    calls = [
        ("GET", keys_url(org), None),
        ("POST", keys_url(org), {"name": "mine", "role": "viewer"}),
        ("GET", keys_url(org, existing["id"]), None),
        ("DELETE", keys_url(org, existing["id"]), None),
    ]
    for method, url, body in calls:
        assert_problem(await client.request(method, url, json=body, headers=person.headers), 403)
    listed = (await client.get(keys_url(org), headers=owner.headers)).json()
    assert listed["total"] == 1
    assert listed["items"][0]["revoked_at"] is None


@pytest.mark.parametrize("role", ["viewer", "member"])
async def test_low_role_keys_cannot_manage_keys(client, role):
    owner = await register(client)
    key = await create_api_key(client, owner, role)
    org = owner.organization_id
    for method, url, body in (
        ("GET", keys_url(org), None),
        ("POST", keys_url(org), {"name": "escalate", "role": "admin"}),
        ("DELETE", keys_url(org, key["id"]), None),
    ):
        response = await client.request(method, url, json=body, headers=bearer(key["key"]))
        assert_problem(response, 403)
    assert (await client.get(keys_url(org), headers=owner.headers)).json()["total"] == 1


async def test_an_admin_key_manages_keys(client):
    owner = await register(client)
    key = await create_api_key(client, owner, "admin")
    made = await client.post(
        keys_url(owner.organization_id),
        json={"name": "child", "role": "viewer"},
        headers=bearer(key["key"]),
    )
    assert made.status_code == 201, made.text
    assert made.json()["created_by"] == str(owner.user_id)  # whom the key answers to
    listed = await client.get(keys_url(owner.organization_id), headers=bearer(key["key"]))
    assert listed.json()["total"] == 2


# --- using a key ----------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["bearer", "x-api-key"])
async def test_a_key_authenticates_in_both_header_styles(client, style):
    owner = await register(client, organization_name="Keyed")
    created = await create_api_key(client, owner, "member")
    headers = bearer(created["key"]) if style == "bearer" else {"X-API-Key": created["key"]}
    response = await client.get(org_url(owner.organization_id), headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Keyed"
    assert response.json()["role"] == "member"
    members = await client.get(f"{org_url(owner.organization_id)}/members", headers=headers)
    assert members.status_code == 200
    assert members.json()["total"] == 1


async def test_using_a_key_sets_last_used_at(client):
    owner = await register(client)
    created = await create_api_key(client, owner, "viewer")
    assert created["last_used_at"] is None
    used = await client.get(org_url(owner.organization_id), headers={"X-API-Key": created["key"]})
    assert used.status_code == 200
    read = await client.get(keys_url(owner.organization_id, created["id"]), headers=owner.headers)
    last_used = read.json()["last_used_at"]
    assert last_used is not None
    assert datetime.fromisoformat(last_used) >= datetime.fromisoformat(created["created_at"])


async def test_a_revoked_key_is_refused_at_once(client):
    owner = await register(client)
    created = await create_api_key(client, owner, "admin")
    url = org_url(owner.organization_id)
    assert (await client.get(url, headers=bearer(created["key"]))).status_code == 200
    revoked = await client.delete(
        keys_url(owner.organization_id, created["id"]), headers=owner.headers
    )
    assert revoked.status_code == 204, revoked.text
    assert revoked.content == b""
    for headers in (bearer(created["key"]), {"X-API-Key": created["key"]}):
        response = await client.get(url, headers=headers)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
    read = (
        await client.get(keys_url(owner.organization_id, created["id"]), headers=owner.headers)
    ).json()
    assert read["revoked_at"] is not None
    # Revoking again is harmless and keeps the first time.
    again = await client.delete(
        keys_url(owner.organization_id, created["id"]), headers=owner.headers
    )
    assert again.status_code == 204
    reread = (
        await client.get(keys_url(owner.organization_id, created["id"]), headers=owner.headers)
    ).json()
    assert reread["revoked_at"] == read["revoked_at"]


async def test_a_key_can_revoke_itself(client):
    owner = await register(client)
    created = await create_api_key(client, owner, "admin")
    response = await client.delete(
        keys_url(owner.organization_id, created["id"]), headers=bearer(created["key"])
    )
    assert response.status_code == 204, response.text
    assert_problem(
        await client.get(org_url(owner.organization_id), headers=bearer(created["key"])), 401
    )


async def test_an_expired_key_is_refused(client, database):
    owner = await register(client)
    created = await create_api_key(
        client, owner, "admin", expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
    )
    url = org_url(owner.organization_id)
    assert (await client.get(url, headers=bearer(created["key"]))).status_code == 200
    async with tenant_session(database, owner.organization_id) as session:
        updated = await session.execute(
            text(
                "UPDATE api_keys SET expires_at = now() - interval '1 second'"
                " WHERE id = :id RETURNING id"
            ),
            {"id": created["id"]},
        )
        assert len(updated.all()) == 1
    for headers in (bearer(created["key"]), {"X-API-Key": created["key"]}):
        body = assert_problem(await client.get(url, headers=headers), 401)
        assert "expired" in body["detail"]


@pytest.mark.parametrize(
    "key", ["assay_not-a-real-key", "assay_", "garbage", "assay_rt_looks-like-refresh"]
)
async def test_unknown_keys_are_refused(client, key):
    owner = await register(client)
    for headers in (bearer(key), {"X-API-Key": key}):
        assert_problem(await client.get(org_url(owner.organization_id), headers=headers), 401)


async def test_a_bad_x_api_key_is_not_rescued_by_a_good_bearer(client):
    owner = await register(client)
    headers = {**owner.headers, "X-API-Key": "assay_wrong"}
    assert_problem(await client.get(org_url(owner.organization_id), headers=headers), 401)


async def test_a_viewer_key_reads_but_cannot_write(client):
    owner = await register(client, organization_name="Read only")
    created = await create_api_key(client, owner, "viewer")
    headers = bearer(created["key"])
    org = owner.organization_id
    assert (await client.get(org_url(org), headers=headers)).status_code == 200
    assert (await client.get(f"{org_url(org)}/members", headers=headers)).status_code == 200
    person = await register(client)
    writes = [
        ("PATCH", org_url(org), {"name": "Changed"}),
        ("DELETE", org_url(org), None),
        ("POST", f"{org_url(org)}/invitations", {"email": person.email, "role": "viewer"}),
        ("PATCH", f"{org_url(org)}/members/{owner.user_id}", {"role": "viewer"}),
        ("DELETE", f"{org_url(org)}/members/{owner.user_id}", None),
        ("POST", keys_url(org), {"name": "more"}),
        ("DELETE", keys_url(org, created["id"]), None),
        ("POST", f"{org_url(org)}/transfer-ownership", {"user_id": str(owner.user_id)}),
    ]
    for method, url, body in writes:
        response = await client.request(method, url, json=body, headers=headers)
        assert_problem(response, 403)
    read = (await client.get(org_url(org), headers=owner.headers)).json()
    assert read["name"] == "Read only"
    members = (await client.get(f"{org_url(org)}/members", headers=owner.headers)).json()
    assert [(m["user_id"], m["role"]) for m in members["items"]] == [(str(owner.user_id), "owner")]


@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
async def test_an_api_key_cannot_use_users_me(client, role):
    owner = await register(client)
    created = await create_api_key(client, owner, role)
    for headers in (bearer(created["key"]), {"X-API-Key": created["key"]}):
        assert_problem(await client.get("/api/v1/users/me", headers=headers), 403)
        patched = await client.patch("/api/v1/users/me", json={"name": "Key"}, headers=headers)
        assert_problem(patched, 403)


async def test_an_api_key_cannot_switch_organization(client):
    owner = await register(client)
    created = await create_api_key(client, owner, "admin")
    response = await client.post(
        "/api/v1/auth/switch-organization",
        json={"organization_id": str(owner.organization_id)},
        headers=bearer(created["key"]),
    )
    assert_problem(response, 403)


async def test_a_key_outlives_its_creators_demotion_only_within_their_new_role(client):
    """Keys act for the organization, with their own role, and answer to their maker: a
    demotion revokes those above the maker's new role (an admin key kept by a viewer would
    keep, and could give back, what the demotion took away)."""
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    created = await create_api_key(client, admin, "admin")
    viewer_key = await create_api_key(client, admin, "viewer")
    await client.patch(
        f"{org_url(owner.organization_id)}/members/{admin.user_id}",
        json={"role": "viewer"},
        headers=owner.headers,
    )
    listed = await client.get(keys_url(owner.organization_id), headers=bearer(created["key"]))
    assert_problem(listed, 401)
    read = await client.get("/api/v1/projects", headers=bearer(viewer_key["key"]))
    assert read.status_code == 200, read.text


async def test_what_a_key_makes_goes_with_the_person_who_made_the_key(client):
    """Keys and invitations made with a key answer to the key's maker: removing them ends
    those too, as it ends their own (a key could otherwise hand on access they lost)."""
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    parent = await create_api_key(client, admin, "admin")
    org = owner.organization_id
    child = await client.post(
        keys_url(org),
        json={"name": "made by a key", "role": "admin"},
        headers=bearer(parent["key"]),
    )
    assert child.status_code == 201, child.text
    grandchild = await client.post(
        keys_url(org),
        json={"name": "and again", "role": "member"},
        headers=bearer(child.json()["key"]),
    )
    assert grandchild.status_code == 201, grandchild.text
    invited = await client.post(
        f"{org_url(org)}/invitations",
        json={"email": f"{uuid.uuid4().hex}@example.com", "role": "viewer"},
        headers=bearer(parent["key"]),
    )
    assert invited.status_code == 201, invited.text
    kept = await create_api_key(client, owner, "admin")

    removed = await client.delete(f"{org_url(org)}/members/{admin.user_id}", headers=owner.headers)
    assert removed.status_code == 204, removed.text
    for made in (parent, child.json(), grandchild.json()):
        assert_problem(await client.get(keys_url(org), headers=bearer(made["key"])), 401)
    assert (await client.get(keys_url(org), headers=bearer(kept["key"]))).status_code == 200
    invitations = await client.get(f"{org_url(org)}/invitations", headers=owner.headers)
    revoked = {item["id"]: item["revoked_at"] for item in invitations.json()["items"]}
    assert revoked[invited.json()["id"]] is not None
    assert invited.json()["created_by"] == str(admin.user_id)


async def test_revoking_a_key_revokes_what_was_made_with_it_and_nothing_outlives_it(client):
    """A key made with a leaked (or short-lived) key survived its revocation, and expiry: an
    admin key meant for an hour made an admin key for ever."""
    owner = await register(client)
    org = owner.organization_id
    soon = datetime.now(UTC) + timedelta(hours=1)
    parent = await create_api_key(client, owner, "admin", expires_at=soon.isoformat())

    async def make(maker: dict, **body: object) -> dict:
        made = await client.post(
            keys_url(org),
            json={"name": "made", "role": "admin", **body},
            headers=bearer(maker["key"]),
        )
        assert made.status_code == 201, made.text
        return dict(made.json())

    child = await make(parent)
    assert child["created_with_key_id"] == parent["id"]
    assert datetime.fromisoformat(child["expires_at"]) == soon  # its maker's, when none asked
    later = (soon + timedelta(minutes=1)).isoformat()
    past_it = await client.post(
        keys_url(org), json={"name": "later", "expires_at": later}, headers=bearer(parent["key"])
    )
    assert_problem(past_it, 422, field="expires_at")
    grandchild = await make(child, expires_at=(soon - timedelta(minutes=1)).isoformat())
    beside = await create_api_key(client, owner, "admin")  # made by a person: not in the tree

    revoked = await client.delete(keys_url(org, parent["id"]), headers=owner.headers)
    assert revoked.status_code == 204, revoked.text
    for made in (parent, child, grandchild):
        assert_problem(await client.get(keys_url(org), headers=bearer(made["key"])), 401)
    assert (await client.get(keys_url(org), headers=bearer(beside["key"]))).status_code == 200
    audit = await client.get(
        f"{org_url(org)}/audit-log", params={"action": "api_key.revoked"}, headers=owner.headers
    )
    [entry] = audit.json()["items"]
    assert entry["details"]["keys_made_with_it"] == 2


async def test_an_invitation_sent_with_a_key_is_revoked_with_it_and_never_outlives_it(client):
    """Sent with a leaked admin key, an invitation outlived the key's revocation (and its
    expiry): accepted, it made its holder an admin for good, with keys of their own."""
    owner = await register(client)
    org = owner.organization_id
    soon = datetime.now(UTC) + timedelta(hours=1)
    parent = await create_api_key(client, owner, "admin", expires_at=soon.isoformat())
    child = await client.post(
        keys_url(org), json={"name": "made", "role": "admin"}, headers=bearer(parent["key"])
    )
    assert child.status_code == 201, child.text
    invitee = await register(client)

    async def invite_with(headers: dict[str, str], email: str) -> dict:
        sent = await client.post(
            f"{org_url(org)}/invitations", json={"email": email, "role": "admin"}, headers=headers
        )
        assert sent.status_code == 201, sent.text
        return dict(sent.json())

    by_parent = await invite_with(bearer(parent["key"]), invitee.email)
    assert by_parent["created_with_key_id"] == parent["id"]
    assert datetime.fromisoformat(by_parent["expires_at"]) == soon  # 72 hours, but for the key
    by_child = await invite_with(bearer(child.json()["key"]), unique_email())
    by_person = await invite_with(owner.headers, unique_email())
    assert by_person["created_with_key_id"] is None

    revoked = await client.delete(keys_url(org, parent["id"]), headers=owner.headers)
    assert revoked.status_code == 204, revoked.text
    listed = await client.get(f"{org_url(org)}/invitations", headers=owner.headers)
    revoked_at = {item["id"]: item["revoked_at"] for item in listed.json()["items"]}
    assert revoked_at[by_parent["id"]] is not None and revoked_at[by_child["id"]] is not None
    assert revoked_at[by_person["id"]] is None
    assert_problem(await accept_invitation(client, invitee, by_parent["token"]), 404)
    audit = await client.get(
        f"{org_url(org)}/audit-log", params={"action": "api_key.revoked"}, headers=owner.headers
    )
    [entry] = audit.json()["items"]
    assert entry["details"]["invitations_sent_with_them"] == 2


async def test_an_invitation_sent_with_a_key_goes_when_its_makers_demotion_revokes_the_key(
    client,
):
    """A demoted admin's admin keys are revoked, and so is what was sent with them, though
    its role (viewer) is still within theirs."""
    owner = await register(client)
    org = owner.organization_id
    admin = await add_member(client, owner, "admin")
    key = await create_api_key(client, admin, "admin")
    sent = await client.post(
        f"{org_url(org)}/invitations",
        json={"email": unique_email(), "role": "viewer"},
        headers=bearer(key["key"]),
    )
    assert sent.status_code == 201, sent.text
    demoted = await client.patch(
        f"{org_url(org)}/members/{admin.user_id}", json={"role": "member"}, headers=owner.headers
    )
    assert demoted.status_code == 200, demoted.text
    listed = await client.get(f"{org_url(org)}/invitations", headers=owner.headers)
    [invitation] = [item for item in listed.json()["items"] if item["id"] == sent.json()["id"]]
    assert invitation["revoked_at"] is not None


# --- list and read --------------------------------------------------------------------------


async def test_list_paginates_with_total(client):
    owner = await register(client)
    created = [await create_api_key(client, owner, "viewer") for _ in range(5)]
    seen: list[str] = []
    for offset in (0, 2, 4):
        body = (
            await client.get(
                keys_url(owner.organization_id),
                params={"limit": 2, "offset": offset},
                headers=owner.headers,
            )
        ).json()
        assert body["total"] == 5
        assert (body["limit"], body["offset"]) == (2, offset)
        seen += [item["id"] for item in body["items"]]
    assert sorted(seen) == sorted(key["id"] for key in created)
    assert len(seen) == 5
    bad = await client.get(
        keys_url(owner.organization_id), params={"offset": -1}, headers=owner.headers
    )
    assert_problem(bad, 422, field="offset")


async def test_list_includes_revoked_keys(client):
    owner = await register(client)
    kept = await create_api_key(client, owner)
    gone = await create_api_key(client, owner)
    await client.delete(keys_url(owner.organization_id, gone["id"]), headers=owner.headers)
    items = (await client.get(keys_url(owner.organization_id), headers=owner.headers)).json()[
        "items"
    ]
    revoked = {item["id"]: item["revoked_at"] is not None for item in items}
    assert revoked == {kept["id"]: False, gone["id"]: True}


async def test_reading_an_unknown_key_is_404(client):
    owner = await register(client)
    for method in ("GET", "DELETE"):
        response = await client.request(
            method, keys_url(owner.organization_id, uuid.uuid4()), headers=owner.headers
        )
        assert_problem(response, 404)
    assert_problem(
        await client.get(keys_url(owner.organization_id, "not-a-uuid"), headers=owner.headers),
        422,
    )


# --- another organization -------------------------------------------------------------------


async def test_another_organizations_keys_are_404(client):
    stranger = await register(client)
    theirs = await create_api_key(client, stranger, "admin")
    me = await register(client)
    mine = await create_api_key(client, me, "admin")
    other = stranger.organization_id
    calls = [
        ("GET", keys_url(other), None),
        ("POST", keys_url(other), {"name": "sneaky"}),
        ("GET", keys_url(other, theirs["id"]), None),
        ("DELETE", keys_url(other, theirs["id"]), None),
        # Their key's id under my own organization.
        ("GET", keys_url(me.organization_id, theirs["id"]), None),
        ("DELETE", keys_url(me.organization_id, theirs["id"]), None),
    ]
    for caller in (me.headers, bearer(mine["key"])):
        for method, url, body in calls:
            response = await client.request(method, url, json=body, headers=caller)
            assert_problem(response, 404)
    # Their key still works, is unrevoked, and they have no new keys.
    assert (await client.get(org_url(other), headers=bearer(theirs["key"]))).status_code == 200
    listed = (await client.get(keys_url(other), headers=stranger.headers)).json()
    assert [(item["id"], item["revoked_at"]) for item in listed["items"]] == [(theirs["id"], None)]
    mine_listed = (await client.get(keys_url(me.organization_id), headers=me.headers)).json()
    assert [item["id"] for item in mine_listed["items"]] == [mine["id"]]


async def test_a_viewer_gets_404_not_403_for_another_organizations_keys(client):
    stranger = await register(client)
    owner = await register(client)
    viewer = await add_member(client, owner, "viewer")
    response = await client.get(keys_url(stranger.organization_id), headers=viewer.headers)
    assert_problem(response, 404)


async def test_a_key_only_ever_acts_in_its_own_organization(client):
    owner = await register(client)
    created = await create_api_key(client, owner, "admin")
    stranger = await register(client)
    newcomer = await register(client, email=unique_email("newcomer"))
    response = await client.post(
        f"{org_url(stranger.organization_id)}/invitations",
        json={"email": newcomer.email},
        headers=bearer(created["key"]),
    )
    assert_problem(response, 404)
    members = (
        await client.get(f"{org_url(stranger.organization_id)}/members", headers=stranger.headers)
    ).json()
    assert members["total"] == 1


async def test_revoking_a_revoked_key_again_sweeps_what_it_left_live_and_says_so(client, database):
    owner = await register(client)
    org = owner.organization_id
    parent = await create_api_key(client, owner, "admin")
    child = await client.post(
        keys_url(org), json={"name": "child", "role": "member"}, headers=bearer(parent["key"])
    )
    assert child.status_code == 201, child.text
    async with tenant_session(database, org) as session:  # revoked some other way, the child not
        await session.execute(
            text("UPDATE api_keys SET revoked_at = now() WHERE id = :id"), {"id": parent["id"]}
        )
    again = await client.delete(keys_url(org, parent["id"]), headers=owner.headers)
    assert again.status_code == 204, again.text
    assert_problem(await client.get(keys_url(org), headers=bearer(child.json()["key"])), 401)
    audit = await client.get(
        f"{org_url(org)}/audit-log", params={"action": "api_key.revoked"}, headers=owner.headers
    )
    [entry] = audit.json()["items"]
    assert entry["details"]["keys_made_with_it"] == 1 and entry["details"]["revoked_before"]
    # Once nothing is left to sweep, revoking again records nothing.
    assert (
        await client.delete(keys_url(org, parent["id"]), headers=owner.headers)
    ).status_code == 204
    audit = await client.get(
        f"{org_url(org)}/audit-log", params={"action": "api_key.revoked"}, headers=owner.headers
    )
    assert audit.json()["total"] == 1
