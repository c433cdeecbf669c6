from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Form, status

from database.deps import (
    Admin,
    CurrentOrganization,
    CurrentPrincipal,
    DbSession,
    OptionalPrincipal,
    Owner,
    Pagination,
    RuntimeDep,
    Viewer,
    auth_rate_limit,
)
from database.users import members, service
from database.users.schemas import (
    LogoutRequest,
    MemberCreate,
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
from utils.schemas import Page

auth_router = APIRouter(prefix="/auth", tags=["auth"])
users_router = APIRouter(prefix="/users", tags=["users"])
members_router = APIRouter(prefix="/organizations", tags=["organizations"])


@auth_router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(auth_rate_limit)],
    summary="Create an account and an organization you own",
)
async def register(
    body: RegisterRequest, session: DbSession, runtime: RuntimeDep
) -> RegisterResponse:
    return await service.register(session, runtime, body)


@auth_router.post(
    "/login",
    dependencies=[Depends(auth_rate_limit)],
    summary="Log in with the OAuth2 password form",
)
async def login(
    session: DbSession,
    runtime: RuntimeDep,
    username: Annotated[str, Form(max_length=320, description="Your email")],
    password: Annotated[str, Form(max_length=200)],
) -> TokenPair:
    return await service.login(session, runtime, username, password)


@auth_router.post("/refresh", summary="Trade a refresh token for a new pair (rotation)")
async def refresh(body: RefreshRequest, session: DbSession, runtime: RuntimeDep) -> TokenPair:
    return await service.refresh(session, runtime, body.refresh_token)


@auth_router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End a login session (by its refresh token or the access token sent)",
)
async def logout(
    session: DbSession,
    principal: OptionalPrincipal,
    body: LogoutRequest | None = None,
) -> None:
    await service.logout(
        session, refresh_token=body.refresh_token if body else None, principal=principal
    )


@auth_router.post("/switch-organization", summary="Get tokens for another of your organizations")
async def switch_organization(
    body: SwitchOrganizationRequest,
    session: DbSession,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
) -> TokenPair:
    return await service.switch_organization(session, runtime, principal, body.organization_id)


@users_router.get("/me")
async def read_me(session: DbSession, principal: CurrentPrincipal) -> MeRead:
    return await service.read_me(session, principal)


@users_router.patch("/me", summary="Change your name or password")
async def update_me(
    body: UserUpdate, session: DbSession, runtime: RuntimeDep, principal: CurrentPrincipal
) -> MeRead:
    return await service.update_me(session, runtime, principal, body)


# --- members of an organization -------------------------------------------------------------


@members_router.post("/{organization_id}/transfer-ownership", summary="Hand the organization over")
async def transfer_ownership(
    body: OwnershipTransfer, _: CurrentOrganization, session: DbSession, principal: Owner
) -> list[MemberRead]:
    return await members.transfer_ownership(session, principal, body.user_id)


@members_router.get("/{organization_id}/members")
async def list_members(
    organization_id: CurrentOrganization, session: DbSession, _: Viewer, page: Pagination
) -> Page[MemberRead]:
    items, total = await members.list_members(
        session, organization_id, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@members_router.post(
    "/{organization_id}/members",
    status_code=status.HTTP_201_CREATED,
    summary="Add a registered user by email",
)
async def add_member(
    body: MemberCreate, _: CurrentOrganization, session: DbSession, principal: Admin
) -> MemberRead:
    return await members.add_member(session, principal, body.email, body.role)


@members_router.patch("/{organization_id}/members/{user_id}")
async def update_member(
    user_id: uuid.UUID,
    body: MemberUpdate,
    _: CurrentOrganization,
    session: DbSession,
    principal: Admin,
) -> MemberRead:
    return await members.change_member_role(session, principal, user_id, body.role)


@members_router.delete(
    "/{organization_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member (admins), or leave (anyone, for themselves)",
)
async def remove_member(
    user_id: uuid.UUID, _: CurrentOrganization, session: DbSession, principal: CurrentPrincipal
) -> None:
    await members.remove_member(session, principal, user_id)
