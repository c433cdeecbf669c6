from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, status

from app.deps import Admin, CurrentPrincipal, DbSession, Owner, Viewer
from app.errors import NotFound
from database.organizations import crud, service
from database.organizations.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    MemberCreate,
    MemberRead,
    MemberUpdate,
    MyOrganizationRead,
    OrganizationCreate,
    OrganizationRead,
    OrganizationUpdate,
    OwnershipTransfer,
)
from utils.pagination import Page, Pagination

router = APIRouter(prefix="/organizations", tags=["organizations"])


def _current_organization(organization_id: uuid.UUID, principal: CurrentPrincipal) -> uuid.UUID:
    """Organization routes act on the organization of the credential; any other id is a 404.

    To act on another of your organizations, switch to it (POST /auth/switch-organization).
    """
    if organization_id != principal.organization_id:
        raise NotFound("Organization not found")
    return organization_id


CurrentOrganization = Annotated[uuid.UUID, Depends(_current_organization)]


@router.get("", summary="The organizations you belong to, with your role in each")
async def list_organizations(
    session: DbSession, principal: Viewer, page: Pagination
) -> Page[MyOrganizationRead]:
    items, total = await service.list_organizations(
        session, principal, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create an organization you own")
async def create_organization(
    body: OrganizationCreate, session: DbSession, principal: CurrentPrincipal
) -> MyOrganizationRead:
    return await service.create_organization(session, principal, body.name)


@router.get("/{organization_id}")
async def read_organization(
    _: CurrentOrganization, session: DbSession, principal: Viewer
) -> MyOrganizationRead:
    organization = await service.get_current_organization(session, principal)
    return MyOrganizationRead(
        **OrganizationRead.model_validate(organization).model_dump(), role=principal.role
    )


@router.patch("/{organization_id}")
async def update_organization(
    body: OrganizationUpdate, _: CurrentOrganization, session: DbSession, principal: Admin
) -> MyOrganizationRead:
    organization = await service.get_current_organization(session, principal)
    if body.name is not None:
        organization.name = body.name
    await session.flush()
    return MyOrganizationRead(
        **OrganizationRead.model_validate(organization).model_dump(), role=principal.role
    )


@router.delete(
    "/{organization_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete the organization and everything in it",
)
async def delete_organization(_: CurrentOrganization, session: DbSession, principal: Owner) -> None:
    organization = await service.get_current_organization(session, principal)
    await crud.delete_organization(session, organization)


@router.post("/{organization_id}/transfer-ownership", summary="Hand the organization over")
async def transfer_ownership(
    body: OwnershipTransfer, _: CurrentOrganization, session: DbSession, principal: Owner
) -> list[MemberRead]:
    return await service.transfer_ownership(session, principal, body.user_id)


# --- members --------------------------------------------------------------------------------


@router.get("/{organization_id}/members")
async def list_members(
    organization_id: CurrentOrganization, session: DbSession, _: Viewer, page: Pagination
) -> Page[MemberRead]:
    rows, total = await crud.list_members(
        session, organization_id, limit=page.limit, offset=page.offset
    )
    items = [
        MemberRead(
            user_id=user.id,
            email=user.email,
            name=user.name,
            role=membership.role,
            created_at=membership.created_at,
        )
        for membership, user in rows
    ]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "/{organization_id}/members",
    status_code=status.HTTP_201_CREATED,
    summary="Add a registered user by email",
)
async def add_member(
    body: MemberCreate, _: CurrentOrganization, session: DbSession, principal: Admin
) -> MemberRead:
    return await service.add_member(session, principal, body.email, body.role)


@router.patch("/{organization_id}/members/{user_id}")
async def update_member(
    user_id: uuid.UUID,
    body: MemberUpdate,
    _: CurrentOrganization,
    session: DbSession,
    principal: Admin,
) -> MemberRead:
    return await service.change_member_role(session, principal, user_id, body.role)


@router.delete(
    "/{organization_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member (admins), or leave (anyone, for themselves)",
)
async def remove_member(
    user_id: uuid.UUID, _: CurrentOrganization, session: DbSession, principal: CurrentPrincipal
) -> None:
    await service.remove_member(session, principal, user_id)


# --- API keys -------------------------------------------------------------------------------


@router.get("/{organization_id}/api-keys")
async def list_api_keys(
    organization_id: CurrentOrganization, session: DbSession, _: Admin, page: Pagination
) -> Page[ApiKeyRead]:
    keys, total = await crud.list_api_keys(
        session, organization_id, limit=page.limit, offset=page.offset
    )
    items = [ApiKeyRead.model_validate(key) for key in keys]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "/{organization_id}/api-keys",
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key; the secret is in this response only",
)
async def create_api_key(
    body: ApiKeyCreate, _: CurrentOrganization, session: DbSession, principal: Admin
) -> ApiKeyCreated:
    return await service.create_api_key(session, principal, body)


@router.get("/{organization_id}/api-keys/{key_id}")
async def read_api_key(
    key_id: uuid.UUID, organization_id: CurrentOrganization, session: DbSession, _: Admin
) -> ApiKeyRead:
    api_key = await crud.get_api_key(session, organization_id, key_id)
    if api_key is None:
        raise NotFound("API key not found")
    return ApiKeyRead.model_validate(api_key)


@router.delete(
    "/{organization_id}/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key (it stops working at once)",
)
async def revoke_api_key(
    key_id: uuid.UUID, _: CurrentOrganization, session: DbSession, principal: Admin
) -> None:
    await service.revoke_api_key(session, principal, key_id)
