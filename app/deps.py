"""Annotated dependencies: the request's database session, the caller, role checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import AssayError, Forbidden, Unauthorized
from app.runtime import Runtime, get_runtime
from database.core import get_database, set_tenant
from database.organizations import crud as org_crud
from database.users import service as auth_service
from utils.auth import Principal, Role, hash_secret, looks_like_api_key


async def _db_session() -> AsyncIterator[AsyncSession]:
    """The request's one transaction: committed when the handler returns, else rolled back."""
    async with get_database().sessionmaker() as session:
        try:
            yield session
        except AssayError as exc:
            if exc.keep_changes:
                await session.commit()
            else:
                await session.rollback()
            raise
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


# scope="function": commit before the response is sent, so a failed commit is an error reply.
DbSession = Annotated[AsyncSession, Depends(_db_session, scope="function")]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

_bearer = HTTPBearer(auto_error=False, description="An access token (JWT) or an API key")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def authenticate_api_key(session: AsyncSession, key: str) -> Principal:
    found = await org_crud.find_api_key(session, hash_secret(key))
    if found is None or found.revoked_at is not None:
        raise Unauthorized("The API key is not valid")
    if found.expires_at is not None and found.expires_at <= datetime.now(UTC):
        raise Unauthorized("The API key has expired")
    await set_tenant(session, organization_id=found.organization_id)
    await org_crud.touch_api_key(session, found.id)
    return Principal(
        organization_id=found.organization_id, role=Role(found.role), api_key_id=found.id
    )


async def _optional_principal(
    session: DbSession,
    runtime: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key_header)],
) -> Principal | None:
    if api_key:
        return await authenticate_api_key(session, api_key)
    if bearer is None:
        return None
    if looks_like_api_key(bearer.credentials):
        return await authenticate_api_key(session, bearer.credentials)
    return await auth_service.authenticate_access_token(session, runtime, bearer.credentials)


async def _principal(
    principal: Annotated[Principal | None, Depends(_optional_principal)],
) -> Principal:
    if principal is None:
        raise Unauthorized()
    return principal


OptionalPrincipal = Annotated[Principal | None, Depends(_optional_principal)]
CurrentPrincipal = Annotated[Principal, Depends(_principal)]


def require_role(role: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def check(principal: CurrentPrincipal) -> Principal:
        if not principal.role.at_least(role):
            raise Forbidden(
                f"This needs the {role.value} role or higher; you are {principal.role.value}"
            )
        return principal

    return check


Viewer = Annotated[Principal, Depends(require_role(Role.viewer))]
Member = Annotated[Principal, Depends(require_role(Role.member))]
Admin = Annotated[Principal, Depends(require_role(Role.admin))]
Owner = Annotated[Principal, Depends(require_role(Role.owner))]


async def auth_rate_limit(request: Request, runtime: RuntimeDep) -> None:
    """Per client address, for the endpoints that take passwords."""
    client = request.client.host if request.client else "unknown"
    await runtime.rate_limiter.hit("auth", client, runtime.settings.auth_rate_limit)
