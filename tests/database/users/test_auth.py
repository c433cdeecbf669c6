from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import bcrypt
import jwt
import pytest

from tests.helpers import PASSWORD, WEAK_PASSWORDS, assert_problem, login, register, unique_email
from utils.auth import PasswordHasher
from utils.errors import Unavailable
from utils.runtime import Runtime

REGISTER = "/api/v1/auth/register"


async def test_register_creates_user_and_owned_organization(client):
    response = await client.post(
        REGISTER,
        json={
            "email": "Ada@Example.com",
            "password": PASSWORD,
            "name": "Ada",
            "organization_name": "Analytical Engines",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["user"]["email"] == "ada@example.com"
    assert body["organization"]["name"] == "Analytical Engines"
    assert body["token_type"] == "bearer"
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["role"] == "owner"
    assert me.json()["organization_id"] == body["organization"]["id"]
    assert "password" not in response.text.lower().replace("password_hash", "")


async def test_register_without_organization_name_names_one(client):
    account = await register(client, name="Grace")
    orgs = await client.get("/api/v1/organizations", headers=account.headers)
    assert orgs.json()["items"][0]["name"] == "Grace's organization"


async def test_duplicate_email_is_conflict_case_insensitively(client):
    email = unique_email()
    await register(client, email=email)
    response = await client.post(
        REGISTER, json={"email": email.upper(), "password": PASSWORD, "name": "Twin"}
    )
    assert_problem(response, 409)


@pytest.mark.parametrize(
    ("password", "reason"),
    WEAK_PASSWORDS,
)
async def test_weak_passwords_are_refused_with_the_rule(client, password, reason):
    response = await client.post(
        REGISTER, json={"email": unique_email(), "password": password, "name": "Weak"}
    )
    body = assert_problem(response, 422, field="password")
    assert reason in body["detail"]


async def test_password_containing_the_email_name_is_refused(client):
    response = await client.post(
        REGISTER,
        json={"email": "charlotte@example.com", "password": "charlotte-2024", "name": "C"},
    )
    assert "email" in assert_problem(response, 422, field="password")["detail"]


async def test_a_password_is_taken_as_typed_spaces_and_all(client):
    """A passphrase beginning or ending with spaces is kept whole: the same keys log in, the
    trimmed ones do not (and its length is judged with the spaces)."""
    email, padded = unique_email(), "  correct horse 42  "
    registered = await client.post(
        REGISTER, json={"email": email, "password": padded, "name": "Spaced"}
    )
    assert registered.status_code == 201, registered.text
    assert (await login(client, email, padded)).status_code == 200
    assert_problem(await login(client, email, padded.strip()), 401)
    short = await client.post(
        REGISTER, json={"email": unique_email(), "password": "  secret-1  ", "name": "S"}
    )
    assert short.status_code == 201, short.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD, "name": "X"}, "email"),
        ({"email": "a@example.com", "password": PASSWORD, "name": ""}, "name"),
        ({"email": "a@example.com", "password": PASSWORD, "name": "x" * 201}, "name"),
        ({"email": "a@example.com", "password": 12345678901, "name": "X"}, "password"),
        ({"email": "a@example.com", "password": PASSWORD}, "name"),
        ({"email": "a@example.com", "password": PASSWORD, "name": "X", "admin": True}, "admin"),
    ],
)
async def test_bad_register_bodies_name_the_field(client, body, field):
    response = await client.post(REGISTER, json=body)
    assert_problem(response, 422, field=field)


async def test_nothing_is_written_when_registration_fails(client, database):
    email = unique_email()
    bad = await client.post(REGISTER, json={"email": email, "password": "weak", "name": "X"})
    assert bad.status_code == 422
    await register(client, email=email)  # the email is still free


async def test_login_returns_tokens(client):
    account = await register(client)
    response = await login(client, account.email.upper())
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"access_token", "refresh_token", "token_type"}
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.json()["id"] == str(account.user_id)


async def test_login_with_wrong_password_or_unknown_email_is_401(client):
    account = await register(client)
    wrong = await login(client, account.email, "not-the-password-1")
    unknown = await login(client, unique_email(), PASSWORD)
    for response in (wrong, unknown):
        body = assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert body["detail"] == "Incorrect email or password"


async def test_login_needs_the_form_fields(client):
    response = await client.post("/api/v1/auth/login", data={"username": "a@example.com"})
    assert_problem(response, 422, field="password")


async def test_login_refuses_unstorable_text_naming_the_field(client):
    account = await register(client)
    for field, form in (
        ("username", {"username": "ada\x00@example.com", "password": PASSWORD}),
        ("password", {"username": account.email, "password": "pass\x00word-1"}),
    ):
        response = await client.post("/api/v1/auth/login", data=form)
        body = assert_problem(response, 422, field=field)
        assert "NUL" in response.text or "null" in response.text.lower(), body


async def test_access_token_claims(client, runtime: Runtime):
    account = await register(client)
    claims = jwt.decode(account.access_token, runtime.secret_key, algorithms=["HS256"])
    assert claims["sub"] == str(account.user_id)
    assert claims["org_id"] == str(account.organization_id)
    assert claims["role"] == "owner"
    assert {"exp", "jti"} <= set(claims)
    lifetime = claims["exp"] - claims["iat"]
    assert lifetime == 15 * 60


async def test_refresh_rotates_and_old_token_is_spent(client):
    account = await register(client)
    first = await client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert first.status_code == 200, first.text
    rotated = first.json()
    assert rotated["refresh_token"] != account.refresh_token
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {rotated['access_token']}"}
    )
    assert me.status_code == 200


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(client):
    account = await register(client)
    rotated = (
        await client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    ).json()
    replay = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
    )
    assert_problem(replay, 401)
    # The legitimate newer token and its access token die with the family.
    newer = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
    )
    assert_problem(newer, 401)
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {rotated['access_token']}"}
    )
    assert_problem(me, 401)
    # Other sessions of the same user are untouched.
    other = await login(client, account.email)
    assert other.status_code == 200


async def test_unknown_refresh_token_is_401(client):
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": "assay_rt_nope"})
    assert_problem(response, 401)


async def test_expired_refresh_token_is_401(client, database):
    from sqlalchemy import text

    account = await register(client)
    async with database.transaction() as session:
        await session.execute(
            text(
                "SELECT set_config('app.organization_id', :org, true),"
                " set_config('app.user_id', :user, true)"
            ),
            {"org": str(account.organization_id), "user": str(account.user_id)},
        )
        await session.execute(
            text("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
        )
    response = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
    )
    assert "expired" in assert_problem(response, 401)["detail"]


async def test_logout_with_access_token_ends_the_session(client):
    account = await register(client)
    response = await client.post("/api/v1/auth/logout", headers=account.headers)
    assert response.status_code == 204
    assert_problem(await client.get("/api/v1/users/me", headers=account.headers), 401)
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
    )
    assert_problem(refresh, 401)


async def test_logout_with_refresh_token_only(client):
    account = await register(client)
    response = await client.post(
        "/api/v1/auth/logout", json={"refresh_token": account.refresh_token}
    )
    assert response.status_code == 204
    assert_problem(await client.get("/api/v1/users/me", headers=account.headers), 401)


async def test_logout_without_credentials_is_401(client):
    assert_problem(await client.post("/api/v1/auth/logout"), 401)


def _token(runtime: Runtime, account, **overrides):
    claims = jwt.decode(account.access_token, runtime.secret_key, algorithms=["HS256"])
    claims.update(overrides)
    return claims


async def test_expired_access_token_is_401(client, runtime):
    account = await register(client)
    claims = _token(runtime, account, exp=datetime.now(UTC) - timedelta(seconds=5))
    token = jwt.encode(claims, runtime.secret_key, algorithm="HS256")
    response = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert "expired" in assert_problem(response, 401)["detail"]


async def test_logout_with_a_refresh_token_beside_an_expired_access_token(client, runtime):
    """A dashboard sends its access token with every request; an idle user's has expired."""
    account = await register(client)
    claims = _token(runtime, account, exp=datetime.now(UTC) - timedelta(seconds=5))
    expired = jwt.encode(claims, runtime.secret_key, algorithm="HS256")
    response = await client.post(
        "/api/v1/auth/logout",
        json={"refresh_token": account.refresh_token},
        headers={"Authorization": f"Bearer {expired}"},
    )
    assert response.status_code == 204, response.text
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
    )
    assert_problem(refresh, 401)


async def test_tampered_token_is_401(client, runtime):
    account = await register(client)
    header, _payload, signature = account.access_token.split(".")
    forged_claims = _token(runtime, account, role="owner", org_id=str(uuid.uuid4()))
    forged_payload = jwt.encode(forged_claims, "x" * 32, algorithm="HS256").split(".")[1]
    token = ".".join([header, forged_payload, signature])
    response = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401)


async def test_alg_none_token_is_401(client, runtime):
    account = await register(client)
    token = jwt.encode(_token(runtime, account), key="", algorithm="none")
    response = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401)


async def test_token_signed_with_another_key_is_401(client, runtime):
    account = await register(client)
    token = jwt.encode(_token(runtime, account), "another-secret-key-" * 3, algorithm="HS256")
    response = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401)


async def test_garbage_bearer_is_401(client):
    response = await client.get("/api/v1/users/me", headers={"Authorization": "Bearer garbage"})
    assert_problem(response, 401)


async def test_missing_credentials_is_401_with_www_authenticate(client):
    response = await client.get("/api/v1/users/me")
    assert_problem(response, 401)
    assert "Bearer" in response.headers["www-authenticate"]


async def test_switch_organization_issues_tokens_for_the_other_org(client):
    account = await register(client)
    created = await client.post(
        "/api/v1/organizations", json={"name": "Second"}, headers=account.headers
    )
    second_id = created.json()["id"]
    switched = await client.post(
        "/api/v1/auth/switch-organization",
        json={"organization_id": second_id},
        headers=account.headers,
    )
    assert switched.status_code == 200, switched.text
    me = await client.get(
        "/api/v1/users/me",
        headers={"Authorization": f"Bearer {switched.json()['access_token']}"},
    )
    assert me.json()["organization_id"] == second_id


async def test_switch_to_an_organization_you_are_not_in_is_404(client):
    account = await register(client)
    stranger = await register(client)
    response = await client.post(
        "/api/v1/auth/switch-organization",
        json={"organization_id": str(stranger.organization_id)},
        headers=account.headers,
    )
    assert_problem(response, 404)


async def test_login_and_register_are_rate_limited_per_address(client, runtime, monkeypatch):
    monkeypatch.setattr(runtime.settings, "auth_rate_limit", "3/minute")
    statuses = [(await login(client, unique_email())).status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    limited = await login(client, unique_email())
    assert_problem(limited, 429)
    assert int(limited.headers["retry-after"]) >= 1
    also_limited = await client.post(
        REGISTER, json={"email": unique_email(), "password": PASSWORD, "name": "X"}
    )
    assert also_limited.status_code == 429
    # Another client address has its own budget.
    import httpx

    transport = httpx.ASGITransport(app=client._transport.app, client=("198.51.100.7", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as other:
        assert (await login(other, unique_email())).status_code == 401


async def test_bcrypt_cost_defaults_to_12():
    from utils.config import Settings

    assert Settings.model_fields["bcrypt_rounds"].default == 12
    hasher = PasswordHasher(rounds=12, threads=1)
    hashed = await hasher.hash(PASSWORD)
    assert hashed.startswith("$2b$12$")
    assert await hasher.verify(PASSWORD, hashed)
    assert not await hasher.verify("wrong-password-1", hashed)


async def test_an_unknown_account_is_checked_at_the_full_cost():
    """A login for an email with no account verifies against a stand-in hash of the same cost,
    so the answer takes as long as a wrong password does (and never passes)."""
    hasher = PasswordHasher(rounds=12, threads=1)
    stand_in = hasher._dummy_hash
    assert stand_in.startswith("$2b$12$") and len(stand_in) == 60
    assert bcrypt.checkpw(PASSWORD.encode(), stand_in.encode()) is False  # a valid hash
    assert not await hasher.verify(PASSWORD, None)


async def test_password_hashes_past_the_queue_are_refused_at_once():
    """Each request waiting for a bcrypt thread holds a database connection: past the queue
    another is refused (503, Retry-After) at once, not queued, and the queue frees as hashes
    end."""
    hasher = PasswordHasher(rounds=10, threads=1, queue=2)
    hashed = await hasher.hash(PASSWORD)
    outcomes = await asyncio.gather(
        *(hasher.verify(PASSWORD, hashed) for _ in range(5)), return_exceptions=True
    )
    assert outcomes[:3] == [True, True, True]
    for refused in outcomes[3:]:
        assert isinstance(refused, Unavailable) and refused.status == 503
        assert refused.headers == {"Retry-After": "1"}
    assert await hasher.verify(PASSWORD, hashed)  # the queue has emptied
