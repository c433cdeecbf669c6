from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import Query, status

from database.deps import (
    MAX_PAGE_SIZE,
    Admin,
    CurrentOrganization,
    CurrentPrincipal,
    DbSession,
    Owner,
    Pagination,
    RuntimeDep,
    Viewer,
)
from database.organizations import audit, crud, service
from database.organizations.audit import RequestMetaDep
from database.organizations.crud.audit_log import AuditFilters
from database.organizations.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    AuditLogPage,
    MyOrganizationRead,
    OrganizationCreate,
    OrganizationUpdate,
)
from database.routing import api_router
from utils.problems import errors
from utils.schemas import Page, Storable

# The members of an organization are users: their routes are the users entity's
# (database/users/apis.py), under this same prefix.
router = api_router(prefix="/organizations", tags=["organizations"])


@router.get(
    "",
    operation_id="organizations_list",
    summary="The organizations you belong to, with your role in each",
)
async def list_organizations(
    session: DbSession, principal: Viewer, page: Pagination
) -> Page[MyOrganizationRead]:
    """Every organization your account is a member of (with an API key: the key's own);
    switch between them with `auth_switch_organization`."""
    items, total = await service.list_organizations(
        session, principal, limit=page.limit, offset=page.offset
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="organizations_create",
    summary="Create an organization you own",
    responses=errors(403, 429),  # an API key is no user
)
async def create_organization(
    body: OrganizationCreate, session: DbSession, principal: CurrentPrincipal, runtime: RuntimeDep
) -> MyOrganizationRead:
    """The new organization is empty; switch to it to work in it. An account creates at most
    `ASSAY_ORGANIZATIONS_PER_HOUR` an hour (each organization has its own limits: the
    invitations it sends, its share of the workers)."""
    return await service.create_organization(session, runtime, principal, body.name)


@router.get(
    "/{organization_id}",
    operation_id="organizations_read",
    summary="Read your current organization",
)
async def read_organization(
    _: CurrentOrganization, session: DbSession, principal: Viewer
) -> MyOrganizationRead:
    """Any other organization id is a 404: credentials act in one organization."""
    return await service.read_current_organization(session, principal)


@router.patch(
    "/{organization_id}",
    operation_id="organizations_update",
    summary="Rename your current organization",
)
async def update_organization(
    body: OrganizationUpdate,
    _: CurrentOrganization,
    session: DbSession,
    principal: Admin,
    meta: RequestMetaDep,
) -> MyOrganizationRead:
    """Admins and owners only."""
    return await service.update_organization(session, principal, body, meta)


@router.delete(
    "/{organization_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="organizations_delete",
    summary="Delete the organization and everything in it",
)
async def delete_organization(
    _: CurrentOrganization, session: DbSession, principal: Owner, meta: RequestMetaDep
) -> None:
    """Owners only; projects, tests, runs, keys and memberships go with it."""
    await service.delete_organization(session, principal, meta)


# --- API keys -------------------------------------------------------------------------------


@router.get(
    "/{organization_id}/api-keys",
    operation_id="api_keys_list",
    summary="List the organization's API keys",
)
async def list_api_keys(
    organization_id: CurrentOrganization, session: DbSession, _: Admin, page: Pagination
) -> Page[ApiKeyRead]:
    """Names, prefixes, roles, expiry and last use; never the secrets."""
    keys, total = await crud.list_api_keys(
        session, organization_id, limit=page.limit, offset=page.offset
    )
    items = [ApiKeyRead.model_validate(key) for key in keys]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "/{organization_id}/api-keys",
    status_code=status.HTTP_201_CREATED,
    operation_id="api_keys_create",
    summary="Create an API key; the secret is in this response only",
)
async def create_api_key(
    body: ApiKeyCreate,
    _: CurrentOrganization,
    session: DbSession,
    principal: Admin,
    meta: RequestMetaDep,
) -> ApiKeyCreated:
    """Keys carry a role up to admin and may expire; only a hash is stored."""
    return await service.create_api_key(session, principal, body, meta)


@router.get(
    "/{organization_id}/api-keys/{key_id}",
    operation_id="api_keys_read",
    summary="Read an API key",
)
async def read_api_key(
    key_id: uuid.UUID, _: CurrentOrganization, session: DbSession, principal: Admin
) -> ApiKeyRead:
    """Its name, prefix, role, expiry, last use and whether it is revoked; never the secret."""
    return ApiKeyRead.model_validate(await service.get_api_key_or_404(session, principal, key_id))


@router.delete(
    "/{organization_id}/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="api_keys_revoke",
    summary="Revoke an API key (it stops working at once)",
)
async def revoke_api_key(
    key_id: uuid.UUID,
    _: CurrentOrganization,
    session: DbSession,
    principal: Admin,
    meta: RequestMetaDep,
) -> None:
    """A revoked key cannot be restored; create a new one."""
    await service.revoke_api_key(session, principal, key_id, meta)


# --- the audit log --------------------------------------------------------------------------


@router.get(
    "/{organization_id}/audit-log",
    operation_id="audit_log_list",
    summary="Who changed what, when and from where: the organization's audit log",
)
async def list_audit_log(
    organization_id: CurrentOrganization,
    session: DbSession,
    _: Admin,
    action: Annotated[
        str | None,
        Query(
            pattern=r"^[a-z_]+\.[a-z_]+$",
            max_length=64,
            description="Only this action, e.g. member.role_changed",
        ),
    ] = None,
    actor_user_id: Annotated[uuid.UUID | None, Query(description="Only this user's")] = None,
    actor_api_key_id: Annotated[uuid.UUID | None, Query(description="Only this API key's")] = None,
    target_type: Annotated[
        str | None, Query(max_length=32, description="Only changes to this kind, e.g. api_key")
    ] = None,
    target_id: Annotated[uuid.UUID | None, Query(description="Only changes to this")] = None,
    since: Annotated[
        datetime | None,
        Query(description="From this moment (inclusive; with a timezone)"),
        Storable,
    ] = None,
    until: Annotated[
        datetime | None, Query(description="Before this moment (with a timezone)"), Storable
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Entries per page")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page")
    ] = None,
) -> AuditLogPage:
    """Admins and owners. Newest first: membership and role changes, invitations, API keys,
    model configurations (which secret fields were set or cleared, never their values),
    deletions, baseline and gate changes, renaming and deleting the organization. Each entry
    names the actor (a user or an API key), the client's address and user agent, and the
    request id. Follow `next_cursor` for older entries; `total` counts every match."""
    filters = AuditFilters(
        action=action,
        actor_user_id=actor_user_id,
        actor_api_key_id=actor_api_key_id,
        target_type=target_type,
        target_id=target_id,
        since=since,
        until=until,
    )
    return await audit.read_log(session, organization_id, filters, cursor=cursor, limit=limit)
