from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from database.deps import (
    Admin,
    CurrentOrganization,
    CurrentPrincipal,
    DbSession,
    Owner,
    Pagination,
    Viewer,
)
from database.organizations import crud, service
from database.organizations.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    MyOrganizationRead,
    OrganizationCreate,
    OrganizationUpdate,
)
from utils.schemas import Page

# The members of an organization are users: their routes are the users entity's
# (database/users/apis.py), under this same prefix.
router = APIRouter(prefix="/organizations", tags=["organizations"])


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
    return await service.read_current_organization(session, principal)


@router.patch("/{organization_id}")
async def update_organization(
    body: OrganizationUpdate, _: CurrentOrganization, session: DbSession, principal: Admin
) -> MyOrganizationRead:
    return await service.update_organization(session, principal, body)


@router.delete(
    "/{organization_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete the organization and everything in it",
)
async def delete_organization(_: CurrentOrganization, session: DbSession, principal: Owner) -> None:
    await service.delete_organization(session, principal)


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
    key_id: uuid.UUID, _: CurrentOrganization, session: DbSession, principal: Admin
) -> ApiKeyRead:
    return ApiKeyRead.model_validate(await service.get_api_key_or_404(session, principal, key_id))


@router.delete(
    "/{organization_id}/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key (it stops working at once)",
)
async def revoke_api_key(
    key_id: uuid.UUID, _: CurrentOrganization, session: DbSession, principal: Admin
) -> None:
    await service.revoke_api_key(session, principal, key_id)
