"""Password endpoints are limited per address and per account, against a real server: failed
logins count per account from each client address (and, more loosely, from all), password
changes per account, registrations per email, and `X-Forwarded-For` is believed only from
configured proxies (none by default)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.servers import Server, server_env, start_server
from tests.helpers import PASSWORD

pytestmark = pytest.mark.slow

PER_ACCOUNT = 3
PER_ADDRESS = 20  # above what the per-account test sends from one address


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("auth-limits")
    env = server_env(
        root / "data",
        ASSAY_AUTH_RATE_LIMIT=f"{PER_ADDRESS}/minute",
        ASSAY_AUTH_ACCOUNT_RATE_LIMIT=f"{PER_ACCOUNT}/minute",
    )
    server = start_server(env, root / "server.log")
    try:
        server.wait_healthy(120)
        yield server
    finally:
        server.stop()


def _client(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30)


def _forwarded(n: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"203.0.113.{n}"}


def _register(client: httpx.Client, email: str, n: int) -> httpx.Response:
    body = {"email": email, "password": PASSWORD, "name": "Limits"}
    return client.post("/api/v1/auth/register", json=body, headers=_forwarded(n))


def _login(client: httpx.Client, email: str, password: str, n: int) -> httpx.Response:
    form = {"username": email, "password": password}
    return client.post("/api/v1/auth/login", data=form, headers=_forwarded(n))


def test_failed_logins_are_limited_per_account_and_a_success_costs_nothing(server):
    email = f"limits-{uuid.uuid4().hex[:8]}@example.com"
    with _client(server) as client:
        assert _register(client, email, 1).status_code == 201
        for n in range(PER_ACCOUNT + 1):  # successes do not count
            assert _login(client, email, PASSWORD, n).status_code == 200
        # Failures do: the address they claim is not believed, so they all come from one.
        for n in range(PER_ACCOUNT):
            assert _login(client, email, "wrong-password-1", 100 + n).status_code == 401
        refused = _login(client, email, PASSWORD, 200)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        # Another account is not held back by it.
        other = f"limits-{uuid.uuid4().hex[:8]}@example.com"
        assert _register(client, other, 2).status_code == 201
        assert _login(client, other, PASSWORD, 3).status_code == 200


def test_a_rotated_forwarded_for_does_not_escape_the_address_limit(server):
    """With no proxy trusted (the default), every request counts against the peer address."""
    with _client(server) as client:
        statuses = [
            _login(client, f"nobody-{n}@example.com", "wrong-password-1", 300 + n).status_code
            for n in range(PER_ADDRESS + 2)
        ]
    assert 429 in statuses, statuses
    assert statuses.index(429) <= PER_ADDRESS


def test_registering_one_email_again_and_again_is_limited(tmp_path):
    env = server_env(tmp_path / "data", ASSAY_AUTH_ACCOUNT_RATE_LIMIT="2/minute")
    server = start_server(env, tmp_path / "server.log")
    try:
        server.wait_healthy(120)
        email = f"again-{uuid.uuid4().hex[:8]}@example.com"
        with _client(server) as client:
            first = _register(client, email, 1)
            again = _register(client, email, 2)
            third = _register(client, email, 3)
            account = first.json()
            headers = {"Authorization": f"Bearer {account['access_token']}"}
            changes = [
                client.patch(
                    "/api/v1/users/me",
                    json={"password": "another-passphrase-2", "current_password": "wrong-one-1"},
                    headers=headers,
                ).status_code
                for _ in range(3)
            ]
        assert (first.status_code, again.status_code, third.status_code) == (201, 409, 429)
        assert changes == [403, 403, 429]
    finally:
        server.stop()
