"""The baseline of bench.request_path: the same reads as Assay's, as a bare ASGI app on asyncpg.

No framework, no ORM, no middleware: per request, the credential check through the same
SECURITY DEFINER function (API keys) or the same JWT and login-session check (tokens), the
tenant's `set_config`, the same SELECT under the same row-level security, JSON out. Never
imported by the service.

`python -m bench.raw_app --port P --dsn postgresql://... --secret S` serves it with uvicorn
(uvloop, httptools), as `python -m app serve` serves Assay.
"""

from __future__ import annotations

import argparse
import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import jwt
import orjson
import uvicorn

_TEST_COLUMNS = (
    "id, project_id, input, messages, expected_output, context, behavior, category, topic,"
    " tags, variables, metadata, expected_tool_calls, tool_responses, max_steps, conversation,"
    " created_at, updated_at"
)
_SET_TENANT = (
    "SELECT set_config('app.organization_id', $1, true), set_config('app.user_id', $2, true)"
)
_API_KEY = "SELECT organization_id, role, expires_at, revoked_at FROM assay_auth_api_key($1)"
_SESSION_ROLE = (
    "SELECT m.role, u.is_active FROM auth_sessions s"
    " JOIN memberships m ON m.organization_id = s.organization_id AND m.user_id = s.user_id"
    " JOIN users u ON u.id = s.user_id WHERE s.id = $1 AND s.revoked_at IS NULL"
)
_READ_TEST = f"SELECT {_TEST_COLUMNS} FROM tests WHERE id = $1"
_LIST_TESTS = f"SELECT {_TEST_COLUMNS} FROM tests ORDER BY created_at, id LIMIT $1 OFFSET 0"
_COUNT_TESTS = "SELECT count(*) FROM tests"
_READ_USER = "SELECT id, email, name, created_at FROM users WHERE id = $1"
_HEALTH = "SELECT version_num FROM alembic_version"


class Unauthorized(Exception):
    pass


class RawApp:
    def __init__(self, dsn: str, secret: str, pool_size: int) -> None:
        self.dsn = dsn
        self.secret = secret
        self.pool_size = pool_size
        self.pool: asyncpg.Pool | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        headers = dict(scope["headers"])
        try:
            status, body = await self._route(path, scope["query_string"], headers)
        except Unauthorized:
            status, body = 401, {"title": "Unauthorized"}
        payload = orjson.dumps(body, default=str)  # asyncpg has a UUID type of its own
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, path: str, query: bytes, headers: dict[bytes, bytes]) -> tuple[int, Any]:
        assert self.pool is not None
        async with self.pool.acquire() as connection, connection.transaction():
            if path == "/health":
                return 200, {"status": "ok", "revision": await connection.fetchval(_HEALTH)}
            if path == "/api/v1/users/me":
                return await self._me(connection, headers)
            if path.startswith("/api/v1/tests"):
                await self._api_key(connection, headers)
                if path == "/api/v1/tests":
                    limit = int(dict(_pairs(query)).get("limit", "50"))
                    rows = await connection.fetch(_LIST_TESTS, limit)
                    total = await connection.fetchval(_COUNT_TESTS)
                    return 200, {"items": [_test(row) for row in rows], "total": total}
                row = await connection.fetchrow(_READ_TEST, uuid.UUID(path.rsplit("/", 1)[1]))
                if row is None:
                    return 404, {"title": "Not found"}
                return 200, _test(row)
        return 404, {"title": "Not found"}

    async def _api_key(self, connection: asyncpg.Connection, headers: dict[bytes, bytes]) -> None:
        key = headers.get(b"x-api-key")
        if key is None:
            raise Unauthorized
        found = await connection.fetchrow(_API_KEY, hashlib.sha256(key).hexdigest())
        if found is None or found["revoked_at"] is not None:
            raise Unauthorized
        await connection.execute(_SET_TENANT, str(found["organization_id"]), "")

    async def _me(
        self, connection: asyncpg.Connection, headers: dict[bytes, bytes]
    ) -> tuple[int, Any]:
        authorization = headers.get(b"authorization", b"")
        try:
            claims = jwt.decode(authorization[7:], self.secret, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            raise Unauthorized from exc
        await connection.execute(_SET_TENANT, claims["org_id"], claims["sub"])
        current = await connection.fetchrow(_SESSION_ROLE, uuid.UUID(claims["sid"]))
        if current is None or not current["is_active"]:
            raise Unauthorized
        user = await connection.fetchrow(_READ_USER, uuid.UUID(claims["sub"]))
        return 200, {
            "id": user["id"],
            "email": user["email"],
            "name": user["name"],
            "created_at": user["created_at"],
            "organization_id": claims["org_id"],
            "role": current["role"],
        }


def _pairs(query: bytes) -> list[tuple[str, str]]:
    return [
        tuple(part.split("=", 1))  # type: ignore[misc]
        for part in query.decode().split("&")
        if "=" in part
    ]


def _test(row: asyncpg.Record) -> dict[str, Any]:
    # asyncpg returns JSONB as text: decode it, as Assay returns the documents themselves.
    test = dict(row)
    for column in (
        "messages",
        "context",
        "variables",
        "metadata",
        "expected_tool_calls",
        "tool_responses",
        "conversation",
    ):
        if test[column] is not None:
            test[column] = orjson.loads(test[column])
    return test


def main(build: Callable[[str, str, int], Any] = RawApp) -> None:
    """Serves the app `build(dsn, secret, pool_size)` makes, as `python -m app serve` serves
    Assay (bench.request_path gives it as many connections as Assay's pool holds at most)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--pool-size", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        build(args.dsn, args.secret, args.pool_size),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
