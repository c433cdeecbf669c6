"""Authentication: register, login, token refresh and rotation, logout, switching organization,
and the check of every request's credential; your own account."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from database.core import Tenant, acting_as, enter_tenant
from database.organizations import crud as org_crud
from database.organizations import service as org_service
from database.organizations.models import Organization
from database.organizations.schemas import OrganizationRead
from database.users import crud
from database.users.models import AuthSession, User
from database.users.schemas import (
    MeRead,
    RegisterRequest,
    RegisterResponse,
    TokenPair,
    UserRead,
    UserUpdate,
)
from notifications.recheck import Issuer
from utils.auth import (
    InvalidToken,
    Principal,
    Role,
    StreamClaims,
    decode_access_token,
    hash_secret,
    issue_access_token,
    looks_like_api_key,
    new_refresh_token,
    normal_email,
    password_problem,
)
from utils.crud import refuse_nulls
from utils.errors import Forbidden, InvalidInput, NotFound, Unauthorized, Unavailable
from utils.ids import new_id
from utils.ratelimit import Quota, Reservation, client_network
from utils.runtime import Runtime
from utils.schemas import NAME_MAX_LENGTH

BAD_CREDENTIALS = "Incorrect email or password"


class RefreshTokenReplayed(Unauthorized):
    """A spent refresh token came back: the whole login session is revoked, and that sticks."""

    keep_changes = True


async def register(
    session: AsyncSession, runtime: Runtime, request: RegisterRequest
) -> RegisterResponse:
    limit = runtime.settings.auth_account_rate_limit
    attempt = await runtime.rate_limiter.reserve(Quota("register-email", request.email, limit))
    user_id = new_id()
    await enter_tenant(session, Tenant(None, user_id))
    async with _given_back_unless_checked(attempt):
        password_hash = await runtime.hasher.hash(request.password)
    user = await crud.create_user(
        session,
        User(id=user_id, email=request.email, name=request.name, password_hash=password_hash),
    )
    organization = await _found_own_organization(
        session, user_id, request.organization_name or _own_organization_name(request.name)
    )
    tokens = await _issue_tokens(session, runtime, user_id, organization.id, Role.owner)
    return RegisterResponse(
        **tokens.model_dump(),
        user=UserRead.model_validate(user),
        organization=OrganizationRead.model_validate(organization),
    )


async def login(
    session: AsyncSession,
    runtime: Runtime,
    email: str,
    password: str,
    *,
    client_address: str | None,
) -> TokenPair:
    email = normal_email(email)
    settings = runtime.settings
    # Failures count per account from each client address, and per account from all of them
    # under a looser cap, so a stranger cannot cheaply lock the owner out. The slots are taken
    # before the password is checked, so parallel guesses cannot outrun the count, and given
    # back on success: a success costs nothing.
    attempt = await runtime.rate_limiter.reserve(
        Quota(
            "login-failure-client",
            f"{client_network(client_address)} {email}",
            settings.auth_account_rate_limit,
        ),
        Quota("login-failure-account", email, settings.auth_account_login_rate_limit),
    )
    candidate = await crud.find_login_candidate(session, email)
    async with _given_back_unless_checked(attempt):
        ok = await runtime.hasher.verify(password, candidate.password_hash if candidate else None)
    if candidate is None or not ok or not candidate.is_active:
        raise Unauthorized(BAD_CREDENTIALS)
    await attempt.release()
    await enter_tenant(session, Tenant(None, candidate.id))
    membership = await org_crud.first_membership(session, candidate.id)
    if membership is None:
        # Left or lost their last organization: without one the account could do nothing,
        # not even accept an invitation, so it gets a new one of its own. One: a login at the
        # same moment waits here, then finds the organization this one made.
        user = await crud.read_user_locked(session, candidate.id)
        assert user is not None
        membership = await org_crud.first_membership(session, candidate.id)
        if membership is None:
            organization = await _found_own_organization(
                session, candidate.id, _own_organization_name(user["name"])
            )
            return await _issue_tokens(session, runtime, candidate.id, organization.id, Role.owner)
    await enter_tenant(session, Tenant(membership.organization_id, candidate.id))
    return await _issue_tokens(
        session, runtime, candidate.id, membership.organization_id, Role(membership.role)
    )


async def _found_own_organization(
    session: AsyncSession, user_id: uuid.UUID, name: str
) -> Organization:
    """A new organization owned by `user_id`, the session acting in it: every account has
    one from registration, and one left with none gets one at login."""
    organization_id = new_id()
    await enter_tenant(session, Tenant(organization_id, user_id))
    organization = await org_crud.create_organization(
        session, Organization(id=organization_id, name=name)
    )
    await org_crud.add_membership(
        session, organization_id=organization_id, user_id=user_id, role=Role.owner
    )
    return organization


def _own_organization_name(user_name: str) -> str:
    """The name of a user's own organization: theirs, cut so that the whole is a valid name."""
    suffix = "'s organization"
    return user_name[: NAME_MAX_LENGTH - len(suffix)].rstrip() + suffix


async def refresh(session: AsyncSession, runtime: Runtime, refresh_token: str) -> TokenPair:
    found = await crud.find_refresh_token(session, hash_secret(refresh_token))
    if found is None or found.session_revoked_at is not None:
        raise Unauthorized("The refresh token is not valid")
    await enter_tenant(session, Tenant(found.organization_id, found.user_id))
    if found.used_at is None and found.expires_at <= datetime.now(UTC):
        raise Unauthorized("The refresh token has expired")
    if found.used_at is not None or not await crud.mark_refresh_token_used(session, found.id):
        await crud.revoke_auth_session(session, found.session_id)
        raise RefreshTokenReplayed(
            "This refresh token was already used; the session has been revoked for safety"
        )
    role = await crud.get_session_role(session, found.session_id)
    if role is None or not role[1]:
        raise Unauthorized("The session has ended")
    auth_session = await crud.get_auth_session(session, found.session_id)
    assert auth_session is not None
    return await _token_pair(session, runtime, auth_session, Role(role[0]))


async def logout(
    session: AsyncSession,
    *,
    refresh_token: str | None,
    principal: Principal | None,
) -> None:
    if refresh_token is not None:
        found = await crud.find_refresh_token(session, hash_secret(refresh_token))
        if found is None:
            raise Unauthorized("The refresh token is not valid")
        await enter_tenant(session, Tenant(found.organization_id, found.user_id))
        await crud.revoke_auth_session(session, found.session_id)
        return
    if principal is None or principal.session_id is None:
        raise Unauthorized("Send the refresh token, or an access token, of the session to end")
    await crud.revoke_auth_session(session, principal.session_id)


async def switch_organization(
    session: AsyncSession, runtime: Runtime, principal: Principal, organization_id: uuid.UUID
) -> TokenPair:
    user_id = principal.require_user()
    await enter_tenant(session, Tenant(organization_id, user_id))
    membership = await org_crud.get_membership(session, organization_id, user_id)
    if membership is None:
        raise NotFound("Organization not found")
    return await _issue_tokens(session, runtime, user_id, organization_id, Role(membership.role))


async def authenticate(
    session: AsyncSession, runtime: Runtime, *, bearer: str | None, api_key: str | None
) -> Principal | None:
    """Who the request's credential belongs to (see database.deps.Authenticator): an API key
    (X-API-Key, or as the bearer token), else an access token."""
    if api_key:
        return await org_service.authenticate_api_key(session, api_key)
    if bearer is None:
        return None
    if looks_like_api_key(bearer):
        return await org_service.authenticate_api_key(session, bearer)
    return await authenticate_access_token(session, runtime, bearer)


async def check_stream_credential(session: AsyncSession, claims: StreamClaims) -> None:
    """A stream token opens its run's stream only while what issued it is still good: the
    login session (not ended, its user still a member) or the API key (not revoked or
    expired). Checked at every opening, so a reconnect after a removal is refused; an open
    stream has it checked again (`ended_stream_issuers`)."""
    if claims.session_id is not None and claims.user_id is not None:
        await enter_tenant(session, Tenant(claims.organization_id, claims.user_id))
        if not await _session_is_good(session, claims.session_id):
            raise Unauthorized("The session that issued this stream token has ended")
        return
    await enter_tenant(session, Tenant(claims.organization_id))
    if claims.api_key_id is None or not await org_crud.api_key_is_live(session, claims.api_key_id):
        raise Unauthorized("The API key that issued this stream token is no longer valid")


SESSION_ENDED = "the login session this stream was opened with has ended"
API_KEY_ENDED = "the API key this stream was opened with is no longer valid"


async def ended_stream_issuers(
    session: AsyncSession, issuers: Sequence[Issuer]
) -> dict[Issuer, str]:
    """Of the issuers of open streams (notifications.recheck), those no longer good, each with
    why: the check of a stream's opening, asked again in each issuer's tenant (row-level
    security), one query per issuer and one tenant switch per tenant."""
    by_tenant: dict[Tenant, list[Issuer]] = {}
    for issuer in issuers:
        tenant = Tenant(issuer.organization_id, issuer.user_id)
        by_tenant.setdefault(tenant, []).append(issuer)
    ended: dict[Issuer, str] = {}
    for tenant, group in by_tenant.items():
        await enter_tenant(session, tenant)
        for issuer in group:
            if issuer.session_id is not None:
                if not await _session_is_good(session, issuer.session_id):
                    ended[issuer] = SESSION_ENDED
            elif issuer.api_key_id is None or not await org_crud.api_key_is_live(
                session, issuer.api_key_id
            ):
                ended[issuer] = API_KEY_ENDED
    return ended


async def _session_is_good(session: AsyncSession, session_id: uuid.UUID) -> bool:
    """Not ended, its user active and still a member (the tenant acting for that user)."""
    current = await crud.get_session_role(session, session_id)
    return current is not None and current[1]


async def authenticate_access_token(
    session: AsyncSession, runtime: Runtime, token: str
) -> Principal:
    try:
        claims = decode_access_token(token, secret=runtime.secret_key)
    except InvalidToken as exc:
        raise Unauthorized(str(exc)) from exc
    await enter_tenant(session, Tenant(claims.organization_id, claims.user_id))
    current = await crud.get_session_role(session, claims.session_id)
    if current is None or not current[1]:
        raise Unauthorized("The session has ended; log in again")
    return Principal(
        organization_id=claims.organization_id,
        role=Role(current[0]),
        user_id=claims.user_id,
        session_id=claims.session_id,
    )


@asynccontextmanager
async def _given_back_unless_checked(attempt: Reservation) -> AsyncIterator[None]:
    """An attempt refused before its password was checked (the hashing threads at capacity,
    503) gives its slots back: a client retrying as told would otherwise spend its account's
    hour of attempts, and find it locked out."""
    try:
        yield
    except Unavailable:
        await attempt.release()
        raise


async def change_password(
    session: AsyncSession,
    runtime: Runtime,
    principal: Principal,
    user: User,
    current: str,
    new: str,
) -> None:
    problem = password_problem(new, user.email)  # the schema could not know the email
    if problem:
        raise InvalidInput(f"password {problem}", field="password")
    # Every attempt counts, not only failures: each costs two bcrypt hashes, and any account
    # may change its password.
    limit = runtime.settings.auth_account_rate_limit
    attempt = await runtime.rate_limiter.reserve(Quota("password-change", str(user.id), limit))
    async with _given_back_unless_checked(attempt):
        if not await runtime.hasher.verify(current, user.password_hash):
            raise Forbidden(
                "current_password is not correct",
                errors=[{"field": "current_password", "message": "is not correct"}],
            )
        user.password_hash = await runtime.hasher.hash(new)
    # Sessions are visible one organization at a time (row-level security): end the other
    # sessions in each of the user's organizations, then act in the current one again.
    for organization_id in await crud.user_organization_ids(session, user.id):
        async with acting_as(session, Tenant(organization_id, user.id)):
            await crud.revoke_user_sessions(session, user.id, except_session=principal.session_id)


async def _issue_tokens(
    session: AsyncSession,
    runtime: Runtime,
    user_id: uuid.UUID,
    organization_id: uuid.UUID,
    role: Role,
) -> TokenPair:
    auth_session = await crud.create_auth_session(
        session, user_id=user_id, organization_id=organization_id
    )
    return await _token_pair(session, runtime, auth_session, role)


async def _token_pair(
    session: AsyncSession, runtime: Runtime, auth_session: AuthSession, role: Role
) -> TokenPair:
    refresh_token = new_refresh_token()
    await crud.add_refresh_token(
        session,
        auth_session=auth_session,
        token_hash=hash_secret(refresh_token),
        expires_at=datetime.now(UTC) + runtime.refresh_token_lifetime,
    )
    access_token = issue_access_token(
        secret=runtime.secret_key,
        user_id=auth_session.user_id,
        organization_id=auth_session.organization_id,
        role=role,
        session_id=auth_session.id,
        lifetime=runtime.access_token_lifetime,
    )
    return TokenPair(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_in=int(runtime.access_token_lifetime.total_seconds()),
    )


# --- your own account -----------------------------------------------------------------------


async def read_me(session: AsyncSession, principal: Principal) -> MeRead:
    user = await crud.read_user(session, principal.require_user())
    if user is None:
        raise NotFound("User not found")
    return MeRead(**user, organization_id=principal.organization_id, role=principal.role)


async def update_me(
    session: AsyncSession, runtime: Runtime, principal: Principal, body: UserUpdate
) -> MeRead:
    user = await crud.get_user(session, principal.require_user())
    if user is None:
        raise NotFound("User not found")
    refuse_nulls(body.model_dump(exclude_unset=True), "name", "password")
    if body.name is not None:
        user.name = body.name
    if body.password is not None:
        assert body.current_password is not None
        await change_password(
            session, runtime, principal, user, body.current_password, body.password
        )
    await crud.save_user(session)
    return await read_me(session, principal)
