from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, status

from app.deps import CurrentPrincipal, DbSession, OptionalPrincipal, RuntimeDep, auth_rate_limit
from app.errors import NotFound
from database.users import crud, service
from database.users.schemas import (
    LogoutRequest,
    MeRead,
    RefreshRequest,
    RegisterRequest,
    RegisterResponse,
    SwitchOrganizationRequest,
    TokenPair,
    UserUpdate,
)

auth_router = APIRouter(prefix="/auth", tags=["auth"])
users_router = APIRouter(prefix="/users", tags=["users"])


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
    user = await crud.get_user(session, principal.require_user())
    if user is None:
        raise NotFound("User not found")
    return MeRead(
        id=user.id,
        email=user.email,
        name=user.name,
        created_at=user.created_at,
        organization_id=principal.organization_id,
        role=principal.role,
    )


@users_router.patch("/me", summary="Change your name or password")
async def update_me(
    body: UserUpdate, session: DbSession, runtime: RuntimeDep, principal: CurrentPrincipal
) -> MeRead:
    user = await crud.get_user(session, principal.require_user())
    if user is None:
        raise NotFound("User not found")
    if body.name is not None:
        user.name = body.name
    if body.password is not None:
        assert body.current_password is not None
        await service.change_password(
            session, runtime, principal, user, body.current_password, body.password
        )
    await session.flush()
    return await read_me(session, principal)
