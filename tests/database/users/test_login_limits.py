"""Failed logins are limited per account from each client address, and per account from all
addresses under a looser cap; a slot is taken before the password is checked, so parallel
guesses cannot outrun the limit. An account left with no organization gets one at login."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import text

from tests.helpers import (
    PASSWORD,
    Account,
    accept_invitation,
    add_member,
    assert_problem,
    bearer,
    invite,
    login,
    register,
)
from utils.auth import PasswordHasher
from utils.runtime import Runtime

WRONG = "wrong-password-1"


@asynccontextmanager
async def client_at(app: object, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests come from `address`."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as http:
        yield http


async def login_from(app: object, address: str, email: str, password: str) -> httpx.Response:
    async with client_at(app, address) as http:
        return await login(http, email, password)


def address(n: int) -> str:
    return f"198.51.{n // 256}.{n % 256}"


@pytest.fixture
def wrong_passwords_checked(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every wrong password bcrypt checked, in order: the guesses an attacker got tested."""
    checked: list[str] = []
    verify = runtime.hasher.verify

    async def counting_verify(password: str, password_hash: str | None) -> bool:
        if password != PASSWORD:
            checked.append(password)
        return await verify(password, password_hash)

    monkeypatch.setattr(runtime.hasher, "verify", counting_verify)
    return checked


# --- parallel guesses -----------------------------------------------------------------------


async def test_parallel_guesses_from_one_address_cannot_exceed_its_limit(
    app, committed_owner: Account, wrong_passwords_checked: list[str]
):
    """40 wrong passwords and the right one at once, from one address: only the limit's 10
    are checked, the rest are refused before bcrypt sees them."""
    attempts = [WRONG + str(n) for n in range(40)] + [PASSWORD]
    responses = await asyncio.gather(
        *(login_from(app, "192.0.2.50", committed_owner.email, p) for p in attempts)
    )
    statuses = [response.status_code for response in responses]
    assert len(wrong_passwords_checked) <= 10, statuses
    assert statuses.count(401) == len(wrong_passwords_checked)
    assert statuses.count(429) >= 30, statuses
    assert set(statuses) <= {200, 401, 429}


async def test_parallel_guesses_from_many_addresses_cannot_exceed_the_account_cap(
    app,
    runtime: Runtime,
    committed_owner: Account,
    wrong_passwords_checked: list[str],
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(runtime.settings, "auth_account_login_rate_limit", "20/hour")
    attempts = [(address(n), WRONG + str(n)) for n in range(40)] + [(address(99), PASSWORD)]
    responses = await asyncio.gather(
        *(login_from(app, where, committed_owner.email, p) for where, p in attempts)
    )
    statuses = [response.status_code for response in responses]
    assert len(wrong_passwords_checked) <= 20, statuses
    assert statuses.count(429) >= 20, statuses
    limited = next(response for response in responses if response.status_code == 429)
    assert_problem(limited, 429)
    assert int(limited.headers["retry-after"]) > 3000  # the hour's window, just started


# --- no lockout by strangers ----------------------------------------------------------------


async def test_strangers_failing_from_other_addresses_do_not_lock_the_owner_out(app, client):
    victim = await register(client)
    async with client_at(app, "192.0.2.66") as attacker:
        statuses = [(await login(attacker, victim.email, WRONG)).status_code for _ in range(11)]
        assert statuses == [401] * 10 + [429]
        refused = await login(attacker, victim.email, PASSWORD)
    assert_problem(refused, 429)
    assert int(refused.headers["retry-after"]) > 3000
    for n in range(9):
        assert (await login_from(app, address(n), victim.email, WRONG)).status_code == 401
    # The owner, from their own address, is not held back by any of it.
    assert (await login(client, victim.email)).status_code == 200


async def test_the_addresses_of_one_ipv6_64_count_as_one(app, client):
    victim = await register(client)
    for n in range(10):
        failed = await login_from(app, f"2001:db8:1:2::{n + 1:x}", victim.email, WRONG)
        assert failed.status_code == 401
    refused = await login_from(app, "2001:db8:1:2::ff", victim.email, PASSWORD)
    assert_problem(refused, 429)
    # Another /64 is another place.
    assert (await login_from(app, "2001:db8:1:3::1", victim.email, PASSWORD)).status_code == 200


async def test_failures_from_all_addresses_together_have_a_cap(app, client, runtime, monkeypatch):
    monkeypatch.setattr(runtime.settings, "auth_account_rate_limit", "3/hour")
    monkeypatch.setattr(runtime.settings, "auth_account_login_rate_limit", "5/hour")
    account = await register(client)
    async with client_at(app, address(1)) as first, client_at(app, address(2)) as second:
        from_first = [(await login(first, account.email, WRONG)).status_code for _ in range(4)]
        from_second = [(await login(second, account.email, WRONG)).status_code for _ in range(3)]
    assert (from_first, from_second) == ([401, 401, 401, 429], [401, 401, 429])
    assert_problem(await login(client, account.email), 429)
    # Another account is not held back by it.
    assert (await login(client, (await register(client)).email)).status_code == 200


async def test_a_success_costs_nothing(client, runtime, monkeypatch):
    monkeypatch.setattr(runtime.settings, "auth_account_rate_limit", "3/hour")
    account = await register(client)
    statuses = [(await login(client, account.email, WRONG)).status_code for _ in range(2)]
    statuses += [(await login(client, account.email)).status_code for _ in range(5)]
    statuses += [(await login(client, account.email, WRONG)).status_code for _ in range(2)]
    assert statuses == [401, 401] + [200] * 5 + [401, 429]


async def test_password_changes_in_parallel_cannot_exceed_the_limit(
    committed_client, committed_owner: Account, wrong_passwords_checked: list[str]
):
    body = {"password": "another-passphrase-2", "current_password": WRONG}
    responses = await asyncio.gather(
        *(
            committed_client.patch("/api/v1/users/me", json=body, headers=committed_owner.headers)
            for _ in range(20)
        )
    )
    statuses = [response.status_code for response in responses]
    assert len(wrong_passwords_checked) <= 10, statuses
    assert statuses.count(403) == len(wrong_passwords_checked)
    assert statuses.count(429) >= 10, statuses


# --- an account with no organization --------------------------------------------------------


async def organizations_of(client: httpx.AsyncClient, access_token: str) -> list[dict]:
    response = await client.get("/api/v1/organizations", headers=bearer(access_token))
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def me(client: httpx.AsyncClient, access_token: str) -> dict:
    response = await client.get("/api/v1/users/me", headers=bearer(access_token))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_deleting_your_only_organization_leaves_you_able_to_log_in(client):
    account = await register(client, name="Ada")
    deleted = await client.delete(
        f"/api/v1/organizations/{account.organization_id}", headers=account.headers
    )
    assert deleted.status_code == 204, deleted.text
    response = await login(client, account.email)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    found = await me(client, token)
    assert found["role"] == "owner"
    assert uuid.UUID(found["organization_id"]) != account.organization_id
    organizations = await organizations_of(client, token)
    assert [o["id"] for o in organizations] == [found["organization_id"]]
    assert organizations[0]["name"] == "Ada's organization"
    # Logging in again lands in that organization, without founding another.
    again = (await login(client, account.email)).json()["access_token"]
    assert (await me(client, again))["organization_id"] == found["organization_id"]


async def test_a_longest_name_founds_an_organization_at_registering_and_at_login(client):
    """A name of 200 characters (the most a name holds) with "'s organization" after it was
    too long for the organization's own name: registering failed naming no field, and an
    account left with no organization could never log in again."""
    name = "N" * 184 + " " + "Z" * 15  # cut after the space, which goes too
    account = await register(client, name=name)
    organizations = await organizations_of(client, account.access_token)
    expected = "N" * 184 + "'s organization"
    assert [o["name"] for o in organizations] == [expected]
    deleted = await client.delete(
        f"/api/v1/organizations/{account.organization_id}", headers=account.headers
    )
    assert deleted.status_code == 204, deleted.text
    response = await login(client, account.email)
    assert response.status_code == 200, response.text
    founded = await organizations_of(client, response.json()["access_token"])
    assert [o["name"] for o in founded] == [expected]


async def test_after_deleting_your_only_organization_you_can_accept_an_invitation(client):
    inviter = await register(client)
    account = await register(client)
    invitation = await invite(client, inviter, account.email, "member")
    deleted = await client.delete(
        f"/api/v1/organizations/{account.organization_id}", headers=account.headers
    )
    assert deleted.status_code == 204, deleted.text
    response = await login(client, account.email)
    assert response.status_code == 200, response.text
    account.access_token = response.json()["access_token"]
    accepted = await accept_invitation(client, account, invitation["token"])
    assert accepted.status_code == 200, accepted.text
    switched = await client.post(
        "/api/v1/auth/switch-organization",
        json={"organization_id": str(inviter.organization_id)},
        headers=account.headers,
    )
    assert switched.status_code == 200, switched.text
    assert (await me(client, switched.json()["access_token"]))["role"] == "member"


async def test_a_member_removed_from_their_only_organization_can_log_in(client):
    owner = await register(client)
    member = await add_member(client, owner, "member")
    # The member deletes the organization they registered with, then is removed from the other.
    first = await login(client, member.email)
    registered_with = (await me(client, first.json()["access_token"]))["organization_id"]
    assert registered_with != str(owner.organization_id)
    deleted = await client.delete(
        f"/api/v1/organizations/{registered_with}",
        headers=bearer(first.json()["access_token"]),
    )
    assert deleted.status_code == 204, deleted.text
    removed = await client.delete(
        f"/api/v1/organizations/{owner.organization_id}/members/{member.user_id}",
        headers=owner.headers,
    )
    assert removed.status_code == 204, removed.text
    response = await login(client, member.email)
    assert response.status_code == 200, response.text
    found = await me(client, response.json()["access_token"])
    assert found["role"] == "owner"
    assert found["organization_id"] not in {registered_with, str(owner.organization_id)}


async def test_logins_at_once_of_an_account_with_no_organization_make_one(
    committed_client, committed_owner: Account, owner_engine
):
    deleted = await committed_client.delete(
        f"/api/v1/organizations/{committed_owner.organization_id}",
        headers=committed_owner.headers,
    )
    assert deleted.status_code == 204, deleted.text
    try:
        responses = await asyncio.gather(
            *(login(committed_client, committed_owner.email) for _ in range(6))
        )
        assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
        tokens = [r.json()["access_token"] for r in responses]
        landed = {(await me(committed_client, token))["organization_id"] for token in tokens}
        assert len(landed) == 1, landed
        assert len(await organizations_of(committed_client, tokens[0])) == 1
    finally:
        async with owner_engine.begin() as connection:
            await connection.execute(
                text(
                    "DELETE FROM organizations WHERE id IN"
                    " (SELECT organization_id FROM memberships WHERE user_id = :u)"
                ),
                {"u": committed_owner.user_id},
            )


async def test_the_per_address_limit_counts_an_ipv6_64_as_one_address(
    app, client, runtime, monkeypatch
):
    """ASSAY_AUTH_RATE_LIMIT: a host changing its address within its /64 at each request is
    one client (it could otherwise register or guess across accounts without end)."""
    monkeypatch.setattr(runtime.settings, "auth_rate_limit", "3/minute")
    statuses = []
    for n in range(5):
        guess = await login_from(app, f"2001:db8:7:8::{n + 1:x}", f"nobody{n}@example.com", WRONG)
        statuses.append(guess.status_code)
    assert statuses == [401, 401, 401, 429, 429]
    assert (await login_from(app, "2001:db8:7:9::1", "x@example.com", WRONG)).status_code == 401
    # An IPv4 client shown as an IPv4-mapped address is its own address, not all of ::/64.
    for n in range(3):
        await login_from(app, "::ffff:203.0.113.5", f"mapped{n}@example.com", WRONG)
    assert (await login_from(app, "::ffff:203.0.113.5", "y@example.com", WRONG)).status_code == 429
    assert (await login_from(app, "::ffff:198.51.100.7", "z@example.com", WRONG)).status_code == 401


async def test_login_finds_the_account_as_registration_normalised_its_email(client):
    """An address typed decomposed (NFD, as some keyboards give it) is the account's, which
    registration kept composed (NFC)."""
    email = f"jose\u0301-{uuid.uuid4().hex[:6]}@example.com"
    account = await register(client, email=email)
    assert account.email != email  # kept composed
    assert (await login(client, email)).status_code == 200
    assert (await login(client, email.upper())).status_code == 200


async def test_an_attempt_refused_at_capacity_costs_the_account_nothing(
    client, runtime, monkeypatch
):
    """Refused before its password was checked (the hashing threads busy: 503), a login, a
    password change or a registration took an attempt of the account's hour: a client
    retrying as told was locked out for an hour once the server was free."""
    monkeypatch.setattr(runtime.settings, "auth_account_rate_limit", "2/hour")
    account = await register(client)
    busy = PasswordHasher(rounds=4, threads=1, queue=0)
    monkeypatch.setattr(runtime, "hasher", busy)
    release = asyncio.Event()

    async def occupy() -> None:  # a hash holding the one thread until released
        await busy._run(lambda: asyncio.run_coroutine_threadsafe(release.wait(), loop).result())

    loop = asyncio.get_running_loop()
    holding = asyncio.create_task(occupy())
    await asyncio.sleep(0.05)
    change = {"password": "another-passphrase-2", "current_password": PASSWORD}
    for _ in range(3):
        assert_problem(await login(client, account.email), 503)
        assert_problem(
            await client.patch("/api/v1/users/me", json=change, headers=account.headers), 503
        )
        registering = {"email": "later@example.com", "password": PASSWORD, "name": "Later"}
        assert_problem(await client.post("/api/v1/auth/register", json=registering), 503)
    release.set()
    await holding
    assert (await login(client, account.email)).status_code == 200
    changed = await client.patch("/api/v1/users/me", json=change, headers=account.headers)
    assert changed.status_code == 200, changed.text
    registered = await client.post("/api/v1/auth/register", json=registering)
    assert registered.status_code == 201, registered.text
