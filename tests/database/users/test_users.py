from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text

from tests.helpers import (
    PASSWORD,
    WEAK_PASSWORDS,
    add_member,
    assert_problem,
    bearer,
    login,
    register,
    switch,
    tenant_session,
)

ME = "/api/v1/users/me"
NEW_PASSWORD = "battery-staple-77"


async def _login_headers(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> dict[str, str]:
    response = await login(client, email, password)
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


# --- read -----------------------------------------------------------------------------------


async def test_me_describes_the_user_and_the_organization_acted_in(client):
    account = await register(client, name="Ada Lovelace")
    response = await client.get(ME, headers=account.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "email", "name", "created_at", "organization_id", "role"}
    assert body["id"] == str(account.user_id)
    assert body["email"] == account.email
    assert body["name"] == "Ada Lovelace"
    assert body["organization_id"] == str(account.organization_id)
    assert body["role"] == "owner"
    assert "password" not in response.text
    assert "$2b$" not in response.text


@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
async def test_me_shows_the_role_in_the_current_organization(client, role):
    owner = await register(client)
    person = await add_member(client, owner, role)
    body = (await client.get(ME, headers=person.headers)).json()
    assert body["organization_id"] == str(owner.organization_id)
    assert body["role"] == role


async def test_me_follows_switching_organization(client):
    owner = await register(client)
    person = await add_member(client, owner, "viewer")
    home = (await client.get(ME, headers=(await _login_headers(client, person.email)))).json()
    assert home["role"] == "owner"
    assert home["organization_id"] != str(owner.organization_id)
    back_home = await switch(client, person, uuid.UUID(home["organization_id"]))
    body = (await client.get(ME, headers=back_home.headers)).json()
    assert (body["organization_id"], body["role"]) == (home["organization_id"], "owner")


async def test_me_needs_credentials(client):
    assert_problem(await client.get(ME), 401)
    assert_problem(await client.patch(ME, json={"name": "Nobody"}), 401)


# --- patch: name ----------------------------------------------------------------------------


async def test_patch_changes_the_name(client):
    owner = await register(client, name="Old Name")
    person = await add_member(client, owner, "member", name="Member Name")
    response = await client.patch(ME, json={"name": "  New Name  "}, headers=person.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "New Name"
    assert body["id"] == str(person.user_id)
    assert body["role"] == "member"
    assert body["organization_id"] == str(owner.organization_id)
    assert (await client.get(ME, headers=person.headers)).json()["name"] == "New Name"
    members = (
        await client.get(
            f"/api/v1/organizations/{owner.organization_id}/members", headers=owner.headers
        )
    ).json()
    names = {m["user_id"]: m["name"] for m in members["items"]}
    assert names[str(person.user_id)] == "New Name"
    assert names[str(owner.user_id)] == "Old Name"


async def test_a_viewer_may_change_their_own_name(client):
    owner = await register(client)
    viewer = await add_member(client, owner, "viewer")
    response = await client.patch(ME, json={"name": "Still Me"}, headers=viewer.headers)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Still Me"


async def test_patch_with_nothing_changes_nothing(client):
    account = await register(client, name="Unchanged")
    response = await client.patch(ME, json={}, headers=account.headers)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Unchanged"
    assert (await login(client, account.email)).status_code == 200


@pytest.mark.parametrize("field", ["name", "password"])
async def test_a_null_is_refused_naming_the_field_as_for_organizations(client, field):
    """Left out, a field is kept; sent as null, it is a mistake to say so, not to ignore."""
    account = await register(client, name="Kept")
    response = await client.patch(ME, json={field: None}, headers=account.headers)
    assert_problem(response, 422, field=f"body.{field}")
    assert (await client.get(ME, headers=account.headers)).json()["name"] == "Kept"
    assert (await login(client, account.email)).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": ["list"]}, "name"),
        ({"email": "new@example.com"}, "email"),
        ({"role": "owner"}, "role"),
        ({"is_active": False}, "is_active"),
        ({"password_hash": "$2b$04$abc"}, "password_hash"),
    ],
)
async def test_patch_refuses_bad_bodies_naming_the_field(client, body, field):
    account = await register(client, name="Kept")
    response = await client.patch(ME, json=body, headers=account.headers)
    problem = assert_problem(response, 422, field=field)
    assert field in problem["detail"]
    me = (await client.get(ME, headers=account.headers)).json()
    assert (me["name"], me["email"], me["role"]) == ("Kept", account.email, "owner")


async def test_patch_with_invalid_json_is_400(client):
    account = await register(client)
    response = await client.patch(
        ME, content=b"{not json", headers={**account.headers, "content-type": "application/json"}
    )
    assert_problem(response, 400)


# --- patch: password ------------------------------------------------------------------------


async def test_password_change_swaps_which_password_logs_in(client):
    account = await register(client)
    response = await client.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": PASSWORD},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    assert "password" not in response.text
    assert_problem(await login(client, account.email, PASSWORD), 401)
    new_login = await login(client, account.email, NEW_PASSWORD)
    assert new_login.status_code == 200, new_login.text
    # The session that made the change carries on.
    assert (await client.get(ME, headers=account.headers)).status_code == 200


async def test_password_and_name_change_together(client):
    account = await register(client, name="Before")
    response = await client.patch(
        ME,
        json={"name": "After", "password": NEW_PASSWORD, "current_password": PASSWORD},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "After"
    assert (await login(client, account.email, NEW_PASSWORD)).status_code == 200


async def test_password_change_ends_the_users_other_sessions(client):
    account = await register(client)
    other = await login(client, account.email)
    other_tokens = other.json()
    response = await client.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": PASSWORD},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    assert_problem(await client.get(ME, headers=bearer(other_tokens["access_token"])), 401)
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": other_tokens["refresh_token"]}
    )
    assert_problem(refresh, 401)
    assert (await client.get(ME, headers=account.headers)).status_code == 200
    kept = await client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert kept.status_code == 200, kept.text


async def test_password_change_ends_sessions_in_the_users_other_organizations(client, database):
    owner = await register(client)
    person = await add_member(client, owner, "member")  # a session in owner's organization
    home = await login(client, person.email)  # and one in their own organization
    home_headers = bearer(home.json()["access_token"])
    home_org = uuid.UUID((await client.get(ME, headers=home_headers)).json()["organization_id"])

    response = await client.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": PASSWORD},
        headers=home_headers,
    )
    assert response.status_code == 200, response.text
    assert_problem(await client.get(ME, headers=person.headers), 401)
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": person.refresh_token}
    )
    assert_problem(refresh, 401)
    assert (await client.get(ME, headers=home_headers)).status_code == 200
    # The caller acts in their own organization again after the change.
    assert (await client.get(ME, headers=home_headers)).json()["organization_id"] == str(home_org)
    async with tenant_session(database, owner.organization_id, person.user_id) as session:
        live = await session.scalar(
            text("SELECT count(*) FROM auth_sessions WHERE revoked_at IS NULL")
        )
    assert live == 0


async def test_wrong_current_password_is_403_and_changes_nothing(client):
    account = await register(client, name="Original")
    response = await client.patch(
        ME,
        json={"name": "Sneaky", "password": NEW_PASSWORD, "current_password": "not-it-123"},
        headers=account.headers,
    )
    body = assert_problem(response, 403)
    assert "current_password" in body["detail"]
    assert (await client.get(ME, headers=account.headers)).json()["name"] == "Original"
    assert (await login(client, account.email, PASSWORD)).status_code == 200
    assert_problem(await login(client, account.email, NEW_PASSWORD), 401)


@pytest.mark.parametrize("current", [None, ""])
async def test_missing_current_password_is_422(client, current):
    account = await register(client)
    body = {"password": NEW_PASSWORD}
    if current is not None:
        body["current_password"] = current
    response = await client.patch(ME, json=body, headers=account.headers)
    problem = assert_problem(response, 422, field="password")
    assert "current_password" in problem["detail"]
    assert (await login(client, account.email, PASSWORD)).status_code == 200
    assert_problem(await login(client, account.email, NEW_PASSWORD), 401)


@pytest.mark.parametrize(
    ("password", "reason"),
    WEAK_PASSWORDS,
)
async def test_weak_new_password_is_422_with_the_rule(client, password, reason):
    account = await register(client)
    response = await client.patch(
        ME, json={"password": password, "current_password": PASSWORD}, headers=account.headers
    )
    body = assert_problem(response, 422)
    assert reason in body["detail"]
    assert (await login(client, account.email, PASSWORD)).status_code == 200
    assert_problem(await login(client, account.email, password), 401)


async def test_new_password_containing_the_email_name_is_422(client):
    """The same rule as at registration: no email name part inside the password."""
    account = await register(client, email="marguerite@example.com", name="Marguerite")
    response = await client.patch(
        ME,
        json={
            "name": "Renamed",
            "password": "Marguerite-2024",
            "current_password": PASSWORD,
        },
        headers=account.headers,
    )
    body = assert_problem(response, 422, field="password")
    assert "email" in body["detail"]
    assert (await login(client, account.email, PASSWORD)).status_code == 200
    assert (await client.get(ME, headers=account.headers)).json()["name"] == "Marguerite"


async def test_an_over_long_password_field_is_422(client):
    account = await register(client)
    response = await client.patch(
        ME, json={"password": "a1" * 101, "current_password": PASSWORD}, headers=account.headers
    )
    assert_problem(response, 422, field="password")
    too_long_current = await client.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": "x" * 201},
        headers=account.headers,
    )
    body = assert_problem(too_long_current, 422, field="current_password")
    assert "required" not in str(body["errors"])  # it was given: too long, not missing
    assert (await login(client, account.email, PASSWORD)).status_code == 200


async def test_the_stored_password_is_a_bcrypt_hash(client, database):
    account = await register(client)
    await client.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": PASSWORD},
        headers=account.headers,
    )
    async with tenant_session(database, account.organization_id, account.user_id) as session:
        row = (
            (
                await session.execute(
                    text("SELECT * FROM users WHERE id = :id"), {"id": account.user_id}
                )
            )
            .mappings()
            .one()
        )
    for column, value in row.items():
        assert NEW_PASSWORD not in str(value), column
    assert row["password_hash"].startswith("$2b$")


async def test_every_password_change_counts_toward_the_accounts_limit(client, runtime, monkeypatch):
    """Successes too: each costs two bcrypt hashes, and any account may send them in a loop
    (only failures counted, one account changing its password to itself held the hashing
    threads and, through them, the database connections of every other request)."""
    monkeypatch.setattr(runtime.settings, "auth_account_rate_limit", "3/hour")
    account = await register(client)
    statuses = []
    for current, new in [(PASSWORD, NEW_PASSWORD), (NEW_PASSWORD, PASSWORD)] * 2:
        changed = await client.patch(
            ME, json={"password": new, "current_password": current}, headers=account.headers
        )
        statuses.append(changed.status_code)
    assert statuses == [200, 200, 200, 429]
    assert (await login(client, account.email, NEW_PASSWORD)).status_code == 200
