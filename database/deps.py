"""Request dependencies: the request's one transaction, who is calling, role checks, paging.

Every entity's router uses them, so they sit below the entities. Who a credential belongs to is
the `users` entity's business (a login session's access token, an organization's API key): the
composition root hands that check over with `install_authenticator`, as it hands the worker
pool its job handlers. Once the caller is known, the request's transaction acts for its
organization (row-level security) before any router code runs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Awaitable
from typing import Annotated, Protocol

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from database.core import get_database
from utils.auth import InvalidToken, Principal, Role, StreamClaims, decode_stream_token
from utils.errors import AssayError, Forbidden, NotFound, Unauthorized
from utils.ratelimit import client_network
from utils.runtime import Runtime, get_runtime


async def _db_session() -> AsyncGenerator[AsyncSession, None]:
    """The request's one transaction: committed when the handler returns, else rolled back.

    A committed session holds no connection (the commit gave it back to the pool), so it is
    left as it is: closing it cost a task and a greenlet switch per request. Every other way
    out closes it, run to completion even if the request is cancelled meanwhile."""
    session = get_database().sessionmaker()
    committed = False
    try:
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
        await session.commit()
        committed = True
    finally:
        if not committed:
            async with session:  # its close, as `async with` runs it
                pass


# scope="function": commit before the response is sent, so a failed commit is an error reply.
DbSession = Annotated[AsyncSession, Depends(_db_session, scope="function")]


async def commit_before_waiting(session: AsyncSession) -> None:
    """Commits the request's transaction now, for a handler about to wait on something slow
    (an outbound call) with no more to read or write: its pooled connection goes back for other
    requests meanwhile. The dependency's commit at the end then has nothing to do."""
    await session.commit()


async def _runtime() -> Runtime:
    # async: a plain function dependency would be sent to the thread pool on every request.
    return get_runtime()


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


# --- who is calling -------------------------------------------------------------------------


class Authenticator(Protocol):
    """Checks the credential sent (an access token, or an API key by either header) and
    returns who it belongs to, with the transaction already acting for them; None when no
    credential was sent. Raises Unauthorized for a credential that is not valid."""

    def __call__(
        self, session: AsyncSession, runtime: Runtime, *, bearer: str | None, api_key: str | None
    ) -> Awaitable[Principal | None]: ...


class StreamCredentialCheck(Protocol):
    """Raises Unauthorized unless the credential that issued a stream token (a login session
    or an API key) is still good; the transaction then acts for the token's organization."""

    def __call__(self, session: AsyncSession, claims: StreamClaims) -> Awaitable[None]: ...


_authenticator: Authenticator | None = None
_stream_credential_check: StreamCredentialCheck | None = None


def install_authenticator(
    authenticator: Authenticator, *, stream_credential_check: StreamCredentialCheck
) -> None:
    global _authenticator, _stream_credential_check
    _authenticator = authenticator
    _stream_credential_check = stream_credential_check


_bearer = HTTPBearer(auto_error=False, description="An access token (JWT) or an API key")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
# The ways to send a credential, as the API document declares them on every operation that
# reads one (app/openapi.py): either of the two.
CREDENTIAL_SCHEMES = (_bearer, _api_key_header)


async def read_credential(session: DbSession, request: Request) -> Principal | None:
    # The schemes are asked directly, not as `Security` dependencies: two fewer to solve on
    # every request (a twentieth of an authenticated read's CPU), the same parsing.
    bearer = await _bearer(request)
    api_key = await _api_key_header(request)
    if bearer is None and not api_key:
        return None
    if _authenticator is None:
        raise RuntimeError("no authenticator is installed (see app.main.create_app)")
    # The runtime asked directly, not as a dependency: one fewer to solve on every request.
    return await _authenticator(
        session, get_runtime(), bearer=bearer.credentials if bearer else None, api_key=api_key
    )


async def read_credential_if_good(session: DbSession, request: Request) -> Principal | None:
    """The credential's caller, or None when none is sent or it is no longer good (expired,
    revoked): for logout, which a refresh token in the body is enough for."""
    try:
        return await read_credential(session, request)
    except Unauthorized:
        return None


# The dependencies that read a credential (the API document declares the schemes on their
# operations: app/openapi.py).
CREDENTIAL_READERS = (read_credential, read_credential_if_good)
# A route depending on the request's transaction may be undone by a concurrent change (a 409);
# one depending on any of these waits for a pooled connection (a 503 when none comes free).
TRANSACTION = _db_session
POOLED = (_db_session, *CREDENTIAL_READERS)


async def _principal(
    principal: Annotated[Principal | None, Depends(read_credential)],
) -> Principal:
    if principal is None:
        raise Unauthorized()
    return principal


OptionalPrincipal = Annotated[Principal | None, Depends(read_credential)]
LenientPrincipal = Annotated[Principal | None, Depends(read_credential_if_good)]
CurrentPrincipal = Annotated[Principal, Depends(_principal)]


class RoleCheck:
    """A dependency admitting callers with `role` or higher (its 403 is documented from it).

    It takes the credential's check itself, not `CurrentPrincipal`: one dependency fewer on
    every request, the same 401 without a credential."""

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(self, principal: OptionalPrincipal) -> Principal:
        if principal is None:
            raise Unauthorized()
        if not principal.role.at_least(self.role):
            raise Forbidden(
                f"This needs the {self.role.value} role or higher; you are {principal.role.value}"
            )
        return principal


Viewer = Annotated[Principal, Depends(RoleCheck(Role.viewer))]
Member = Annotated[Principal, Depends(RoleCheck(Role.member))]
Admin = Annotated[Principal, Depends(RoleCheck(Role.admin))]
Owner = Annotated[Principal, Depends(RoleCheck(Role.owner))]


async def _run_watcher(
    run_id: uuid.UUID,
    session: DbSession,
    runtime: RuntimeDep,
    principal: OptionalPrincipal,
    token: Annotated[str | None, Query(description="A stream token of this run")] = None,
) -> Principal:
    """Who may watch the run: a stream token of this very run (401 otherwise), or a caller of
    the run's organization (whose check is the run's own 404). Either way the answer names
    what issued the credential (a login session or an API key): an open stream has it
    checked again."""
    if token is not None:
        try:
            claims = decode_stream_token(token, secret=runtime.secret_key)
        except InvalidToken as exc:
            raise Unauthorized(str(exc).capitalize()) from exc
        if claims.run_id != run_id:
            raise Unauthorized("The stream token is for another run")
        if _stream_credential_check is None:
            raise RuntimeError("no authenticator is installed (see app.main.create_app)")
        await _stream_credential_check(session, claims)
        return Principal(
            organization_id=claims.organization_id,
            role=Role.viewer,
            user_id=claims.user_id,
            session_id=claims.session_id,
            api_key_id=claims.api_key_id,
        )
    if principal is None:
        raise Unauthorized("A stream token (?token=) or an Authorization header is needed")
    return principal


RunWatcher = Annotated[Principal, Depends(_run_watcher)]


async def _current_organization(
    organization_id: uuid.UUID, principal: CurrentPrincipal
) -> uuid.UUID:
    """Organization routes act on the organization of the credential; any other id is a 404.

    To act on another of your organizations, switch to it (POST /auth/switch-organization).
    """
    if organization_id != principal.organization_id:
        raise NotFound("Organization not found")
    return organization_id


CurrentOrganization = Annotated[uuid.UUID, Depends(_current_organization)]


async def auth_rate_limit(request: Request, runtime: RuntimeDep) -> None:
    """Per client address (an IPv6 one's /64), for the endpoints that take passwords."""
    client = client_network(request.client.host if request.client else None)
    await runtime.rate_limiter.hit("auth", client, runtime.settings.auth_rate_limit)


# --- paging ---------------------------------------------------------------------------------

MAX_PAGE_SIZE = 200
MAX_OFFSET = 10_000_000


class PageParams(BaseModel):
    limit: int = 50
    offset: int = 0


async def _page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


Pagination = Annotated[PageParams, Depends(_page_params)]
