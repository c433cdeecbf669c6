"""What authentication costs per request: /health (one database round trip) is the baseline;
an access token and an API key each add the credential check and tenant scoping."""

from __future__ import annotations

from bench.harness import bench_app, rate

REQUESTS = 1000
PASSWORD = "bench-password-1"


async def run() -> None:
    async with bench_app(bcrypt_rounds=4) as client:
        registered = await client.post(
            "/api/v1/auth/register",
            json={"email": "runner@example.com", "password": PASSWORD, "name": "Bench"},
        )
        assert registered.status_code == 201, registered.text
        account = registered.json()
        jwt_headers = {"Authorization": f"Bearer {account['access_token']}"}
        key = await client.post(
            f"/api/v1/organizations/{account['organization']['id']}/api-keys",
            json={"name": "bench", "role": "viewer"},
            headers=jwt_headers,
        )
        key_headers = {"X-API-Key": key.json()["key"]}

        async def health() -> None:
            assert (await client.get("/health")).status_code == 200

        async def me_with_token() -> None:
            assert (await client.get("/api/v1/users/me", headers=jwt_headers)).status_code == 200

        async def org_with_key() -> None:
            response = await client.get("/api/v1/organizations", headers=key_headers)
            assert response.status_code == 200

        baseline = await rate(REQUESTS, health)
        token = await rate(REQUESTS, me_with_token)
        api_key = await rate(REQUESTS, org_with_key)

    print("auth overhead (sequential, in-process ASGI, embedded PostgreSQL)")
    print(f"  baseline GET /health              {baseline:8.0f} req/s   1.00x")
    for label, value in (
        ("GET /users/me with access token", token),
        ("GET /organizations with API key", api_key),
    ):
        print(f"  {label:33s} {value:8.0f} req/s   {value / baseline:.2f}x of baseline")
