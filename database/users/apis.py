from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Form, status

from database.deps import (
    Admin,
    CurrentOrganization,
    CurrentPrincipal,
    DbSession,
    LenientPrincipal,
    Owner,
    Pagination,
    RuntimeDep,
    Viewer,
    auth_rate_limit,
)
from database.organizations.audit import RequestMetaDep
from database.organizations.schemas import MyOrganizationRead
from database.routing import api_router
from database.users import members, service
from database.users.schemas import (
    InvitationAccept,
    InvitationCreate,
    InvitationCreated,
    InvitationRead,
    LogoutRequest,
    MemberRead,
    MemberUpdate,
    MeRead,
    OwnershipTransfer,
    RefreshRequest,
    RegisterRequest,
    RegisterResponse,
    SwitchOrganizationRequest,
    TokenPair,
    UserUpdate,
)
from utils.problems import errors
from utils.schemas import Page, Storable

auth_router = api_router(prefix="/auth", tags=["auth"])
users_router = api_router(prefix="/users", tags=["users"])
members_router = api_router(prefix="/organizations", tags=["organizations"])


@auth_router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(auth_rate_limit)],
    operation_id="auth_register",
    summary="Create an account and an organization you own",
    responses=errors(409, 503),  # 503: password hashing at capacity
)
async def register(
    body: RegisterRequest, session: DbSession, runtime: RuntimeDep
) -> RegisterResponse:
    """Returns the new user, the organization and a token pair; the email must not be registered
    yet."""
    return await service.register(session, runtime, body)


@auth_router.post(
    "/login",
    dependencies=[Depends(auth_rate_limit)],
    operation_id="auth_login",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "example": {"username": "ada@example.com", "password": "a-long-passphrase-1"}
                }
            }
        }
    },
    summary="Log in with the OAuth2 password form",
    responses=errors(401, 503),
)
async def login(
    session: DbSession,
    runtime: RuntimeDep,
    meta: RequestMetaDep,
    username: Annotated[str, Form(max_length=320, description="Your email"), Storable],
    password: Annotated[str, Form(max_length=200), Storable],
) -> TokenPair:
    """Trades an email (`username`) and password for an access token and a refresh token, in your
    first organization. An account that belongs to no organization any more (it left or
    deleted its last one) gets a new one of its own, as at registration, and logs in there as
    its owner.

    Failed logins are limited per account from each client address (10 an hour by default,
    `ASSAY_AUTH_ACCOUNT_RATE_LIMIT`) and per account from all addresses together (100 an
    hour, `ASSAY_AUTH_ACCOUNT_LOGIN_RATE_LIMIT`); past either, even the right password is a
    429 with `Retry-After`. A login that succeeds is not counted."""
    return await service.login(session, runtime, username, password, client_address=meta.ip)


@auth_router.post(
    "/refresh",
    operation_id="auth_refresh",
    summary="Trade a refresh token for a new pair (rotation)",
    responses=errors(401),
)
async def refresh(body: RefreshRequest, session: DbSession, runtime: RuntimeDep) -> TokenPair:
    """Each refresh token works once; presenting a spent one ends the whole login session."""
    return await service.refresh(session, runtime, body.refresh_token)


@auth_router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth_logout",
    summary="End a login session",
    responses=errors(401),
)
async def logout(
    session: DbSession,
    principal: LenientPrincipal,
    body: LogoutRequest | None = None,
) -> None:
    """Ends the session of the refresh token sent, or else of the access token in the Authorization
    header. With a refresh token, an access token sent beside it may have expired."""
    await service.logout(
        session, refresh_token=body.refresh_token if body else None, principal=principal
    )


@auth_router.post(
    "/switch-organization",
    operation_id="auth_switch_organization",
    summary="Get tokens for another of your organizations",
    responses=errors(403, 404),
)
async def switch_organization(
    body: SwitchOrganizationRequest,
    session: DbSession,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
) -> TokenPair:
    """Issues a token pair acting in another organization you are a member of, with your role
    there."""
    return await service.switch_organization(session, runtime, principal, body.organization_id)


@auth_router.post(
    "/accept-invitation",
    operation_id="invitations_accept",
    summary="Accept an invitation: join its organization",
    responses=errors(403, 404, 409),
)
async def accept_invitation(
    body: InvitationAccept, session: DbSession, principal: CurrentPrincipal, meta: RequestMetaDep
) -> MyOrganizationRead:
    """Logged in as the account whose email was invited, send the invitation's token (a
    dashboard link carries it, as in `https://dashboard.example/accept-invitation?token=...`):
    you become a member with the invited role. The token works once. An unknown, used, revoked
    or expired token, or another account's invitation, is a 404; being a member already is a
    409. Returns the organization and your role there; switch to it with
    `auth_switch_organization`."""
    return await members.accept_invitation(session, principal, body.token, meta)


@users_router.get(
    "/me",
    operation_id="users_read_me",
    summary="Who you are",
    responses=errors(403),  # an API key is no user
)
async def read_me(session: DbSession, principal: CurrentPrincipal) -> MeRead:
    """Your account, the organization your credential acts in, and your role there."""
    return await service.read_me(session, principal)


@users_router.patch(
    "/me",
    operation_id="users_update_me",
    summary="Change your name or password",
    responses=errors(403, 429, 503),
)
async def update_me(
    body: UserUpdate, session: DbSession, runtime: RuntimeDep, principal: CurrentPrincipal
) -> MeRead:
    """A new password needs `current_password`, and ends your other login sessions."""
    return await service.update_me(session, runtime, principal, body)


# --- members of an organization -------------------------------------------------------------


@members_router.post(
    "/{organization_id}/transfer-ownership",
    operation_id="organizations_transfer_ownership",
    summary="Hand the organization over",
    responses=errors(404, 409),
)
async def transfer_ownership(
    body: OwnershipTransfer,
    _: CurrentOrganization,
    session: DbSession,
    principal: Owner,
    meta: RequestMetaDep,
) -> list[MemberRead]:
    """Makes another member the owner; you become an admin."""
    return await members.transfer_ownership(session, principal, body.user_id, meta)


@members_router.get(
    "/{organization_id}/members",
    operation_id="members_list",
    summary="List the organization's members",
)
async def list_members(
    organization_id: CurrentOrganization, session: DbSession, _: Viewer, page: Pagination
) -> Page[MemberRead]:
    """Every member with their email, name and role, paginated."""
    items, total = await members.list_members(
        session, organization_id, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@members_router.patch(
    "/{organization_id}/members/{user_id}",
    operation_id="members_update",
    summary="Change a member's role",
    responses=errors(409),
)
async def update_member(
    user_id: uuid.UUID,
    body: MemberUpdate,
    _: CurrentOrganization,
    session: DbSession,
    principal: Admin,
    meta: RequestMetaDep,
) -> MemberRead:
    """Only an owner grants or takes away the owner role; the last owner keeps it."""
    return await members.change_member_role(session, principal, user_id, body.role, meta)


@members_router.delete(
    "/{organization_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="members_remove",
    summary="Remove a member (admins), or leave (anyone, for themselves)",
    responses=errors(403, 409),
)
async def remove_member(
    user_id: uuid.UUID,
    _: CurrentOrganization,
    session: DbSession,
    principal: CurrentPrincipal,
    meta: RequestMetaDep,
) -> None:
    """Their access ends at once: sessions, stream tokens and the API keys they created (a
    live stream they already hold open ends within the recheck interval,
    `ASSAY_SSE_RECHECK_SECONDS`, 60 seconds by default); the last owner cannot leave."""
    await members.remove_member(session, principal, user_id, meta)


# --- invitations ----------------------------------------------------------------------------


@members_router.get(
    "/{organization_id}/invitations",
    operation_id="invitations_list",
    summary="List the organization's invitations",
)
async def list_invitations(
    organization_id: CurrentOrganization, session: DbSession, _: Admin, page: Pagination
) -> Page[InvitationRead]:
    """Unanswered, accepted, revoked and expired invitations, newest first; never their
    tokens."""
    items, total = await members.list_invitations(
        session, organization_id, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@members_router.post(
    "/{organization_id}/invitations",
    status_code=status.HTTP_201_CREATED,
    operation_id="invitations_create",
    summary="Invite someone by email; the token is in this response only",
    responses=errors(429),
)
async def create_invitation(
    body: InvitationCreate,
    _: CurrentOrganization,
    session: DbSession,
    runtime: RuntimeDep,
    principal: Admin,
    meta: RequestMetaDep,
) -> InvitationCreated:
    """Send the token to the invitee (a dashboard link carries it); logged in with that email,
    they accept it with `invitations_accept` before it expires (`ASSAY_INVITATION_HOURS`).
    The answer is the same whether or not the email has an account. Admins invite with roles
    up to admin, owners with any role; an organization sends at most
    `ASSAY_INVITATIONS_PER_HOUR` an hour."""
    return await members.invite(session, runtime, principal, body, meta)


@members_router.delete(
    "/{organization_id}/invitations/{invitation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="invitations_revoke",
    summary="Revoke an invitation (its token stops working at once)",
    responses=errors(409),
)
async def revoke_invitation(
    invitation_id: uuid.UUID,
    _: CurrentOrganization,
    session: DbSession,
    principal: Admin,
    meta: RequestMetaDep,
) -> None:
    """Revoking a revoked or expired invitation is no error; an accepted one is a 409 (remove
    the member instead)."""
    await members.revoke_invitation(session, principal, invitation_id, meta)
