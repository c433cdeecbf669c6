"""The second baseline of bench.request_path: bench.raw_app's SQL served through FastAPI.

The same statements on the same asyncpg pool as the bare app, but routed by FastAPI, with the
credential read by `Security` dependencies, the connection and its transaction a `yield`
dependency, and responses validated and serialised through Assay's own response schemas. No
middleware, no ORM, none of Assay's code on the path but its schemas: what sits between this and
the bare app is the framework, and what sits between this and Assay is Assay's own path
(middleware, SQLAlchemy, its dependencies). Never imported by the service.

`python -m bench.framework_app --port P --dsn postgresql://... --secret S`.
"""

# No `from __future__ import annotations`: FastAPI reads the dependencies' annotations, which
# name aliases local to create_app.
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import jwt
from fastapi import Depends, FastAPI, HTTPException, Query, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from bench import raw_app
from database.tests.schemas import TestRead


class TestPage(BaseModel):
    items: list[TestRead]
    total: int


class Me(BaseModel):
    id: uuid.UUID
    email: str
    name: str | None
    created_at: datetime
    organization_id: uuid.UUID
    role: str


def create_app(dsn: str, secret: str, pool_size: int) -> FastAPI:
    pools: dict[str, asyncpg.Pool] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pools["main"] = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size)
        try:
            yield
        finally:
            await pools["main"].close()

    async def connection() -> AsyncIterator[asyncpg.Connection]:
        async with pools["main"].acquire() as held, held.transaction():
            yield held

    Connection = Annotated[asyncpg.Connection, Depends(connection)]
    api_key = APIKeyHeader(name="X-API-Key", auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    async def key_tenant(
        held: Connection, key: Annotated[str | None, Security(api_key)]
    ) -> asyncpg.Connection:
        if key is None:
            raise HTTPException(401)
        found = await held.fetchrow(raw_app._API_KEY, hashlib.sha256(key.encode()).hexdigest())
        if found is None or found["revoked_at"] is not None:
            raise HTTPException(401)
        await held.execute(raw_app._SET_TENANT, str(found["organization_id"]), "")
        return held

    KeyTenant = Annotated[asyncpg.Connection, Depends(key_tenant)]
    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health(held: Connection) -> dict[str, Any]:
        return {"status": "ok", "revision": await held.fetchval(raw_app._HEALTH)}

    @app.get("/api/v1/tests/{test_id}", response_model=TestRead)
    async def read_test(test_id: uuid.UUID, held: KeyTenant) -> dict[str, Any]:
        row = await held.fetchrow(raw_app._READ_TEST, test_id)
        if row is None:
            raise HTTPException(404)
        return _test(row)

    @app.get("/api/v1/tests", response_model=TestPage)
    async def list_tests(
        held: KeyTenant, limit: Annotated[int, Query(ge=1, le=200)] = 50
    ) -> dict[str, Any]:
        rows = await held.fetch(raw_app._LIST_TESTS, limit)
        total = await held.fetchval(raw_app._COUNT_TESTS)
        return {"items": [_test(row) for row in rows], "total": total}

    @app.get("/api/v1/users/me", response_model=Me)
    async def me(
        held: Connection,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> dict[str, Any]:
        if credentials is None:
            raise HTTPException(401)
        try:
            claims = jwt.decode(credentials.credentials, secret, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            raise HTTPException(401) from exc
        await held.execute(raw_app._SET_TENANT, claims["org_id"], claims["sub"])
        current = await held.fetchrow(raw_app._SESSION_ROLE, uuid.UUID(claims["sid"]))
        if current is None or not current["is_active"]:
            raise HTTPException(401)
        user = await held.fetchrow(raw_app._READ_USER, uuid.UUID(claims["sub"]))
        return {**dict(user), "organization_id": claims["org_id"], "role": current["role"]}

    return app


def _test(row: asyncpg.Record) -> dict[str, Any]:
    test = raw_app._test(row)
    test["meta"] = test.pop("metadata")  # the ORM attribute's name, which TestRead reads
    return test


if __name__ == "__main__":
    raw_app.main(create_app)
