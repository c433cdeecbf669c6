"""Organization rules beyond CRUD: who may grant which role, keeping an owner, API keys."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, Forbidden, NotFound
from database.core import new_id, set_tenant
from database.organizations import crud
from database.organizations.models import ApiKey, Membership, Organization
from database.organizations.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    MemberRead,
    MyOrganizationRead,
    OrganizationRead,
)
from database.users import crud as user_crud
from utils.auth import Principal, Role, hash_secret, new_api_key

API_KEY_DISPLAY_LENGTH = 12


async def create_organization(
    session: AsyncSession, principal: Principal, name: str
) -> MyOrganizationRead:
    user_id = principal.require_user()
    organization_id = new_id()
    await set_tenant(session, organization_id=organization_id, user_id=user_id)
    organization = await crud.create_organization(
        session, Organization(id=organization_id, name=name)
    )
    await crud.add_membership(
        session, organization_id=organization_id, user_id=user_id, role=Role.owner
    )
    await set_tenant(session, organization_id=principal.organization_id, user_id=user_id)
    return MyOrganizationRead(**_org_fields(organization), role=Role.owner)


async def list_organizations(
    session: AsyncSession, principal: Principal, *, limit: int, offset: int
) -> tuple[list[MyOrganizationRead], int]:
    if principal.user_id is None:
        organization = await get_current_organization(session, principal)
        page = [MyOrganizationRead(**_org_fields(organization), role=principal.role)]
        return page[offset : offset + limit], 1
    rows, total = await crud.list_user_organizations(
        session, principal.user_id, limit=limit, offset=offset
    )
    return [MyOrganizationRead(**_org_fields(org), role=Role(role)) for org, role in rows], total


async def get_current_organization(session: AsyncSession, principal: Principal) -> Organization:
    organization = await crud.get_organization(session, principal.organization_id)
    if organization is None:
        raise NotFound("Organization not found")
    return organization


# --- members --------------------------------------------------------------------------------


async def add_member(
    session: AsyncSession, principal: Principal, email: str, role: Role
) -> MemberRead:
    _check_may_grant(principal, role)
    user_id = await user_crud.find_user_id_by_email(session, email)
    if user_id is None:
        raise NotFound("No registered user has this email; they must register first")
    membership = await crud.add_membership(
        session, organization_id=principal.organization_id, user_id=user_id, role=role
    )
    return await _member_read(session, membership)


async def change_member_role(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID, role: Role
) -> MemberRead:
    membership = await _get_member(session, principal, user_id)
    current = Role(membership.role)
    _check_may_grant(principal, current)
    _check_may_grant(principal, role)
    if current is Role.owner and role is not Role.owner:
        await _keep_an_owner(session, principal)
    membership.role = role
    await session.flush()
    return await _member_read(session, membership)


async def remove_member(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> None:
    membership = await _get_member(session, principal, user_id)
    leaving_self = principal.user_id == user_id
    if not leaving_self:
        if not principal.role.at_least(Role.admin):
            raise Forbidden("Removing members needs the admin role")
        _check_may_grant(principal, Role(membership.role))
    if membership.role == Role.owner:
        await _keep_an_owner(session, principal)
    await crud.remove_membership(session, membership)
    # Login sessions are visible only to their own user (row-level security): end the removed
    # user's sessions in this organization as them, then act as the caller again.
    await set_tenant(session, organization_id=principal.organization_id, user_id=user_id)
    await user_crud.revoke_user_sessions(session, user_id)
    await set_tenant(session, organization_id=principal.organization_id, user_id=principal.user_id)


async def transfer_ownership(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID
) -> list[MemberRead]:
    me = principal.require_user()
    if user_id == me:
        raise Conflict("You already own this organization")
    target = await _get_member(session, principal, user_id)
    mine = await _get_member(session, principal, me)
    target.role = Role.owner
    mine.role = Role.admin
    await session.flush()
    return [await _member_read(session, target), await _member_read(session, mine)]


def _check_may_grant(principal: Principal, role: Role) -> None:
    """Admins manage members up to admin; only owners touch the owner role."""
    if role is Role.owner and principal.role is not Role.owner:
        raise Forbidden("Only an owner can grant, change or remove the owner role")


async def _keep_an_owner(session: AsyncSession, principal: Principal) -> None:
    if await crud.count_owners(session, principal.organization_id) <= 1:
        raise Conflict("An organization needs at least one owner; hand ownership over first")


async def _get_member(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID
) -> Membership:
    membership = await crud.get_membership(session, principal.organization_id, user_id)
    if membership is None:
        raise NotFound("Member not found")
    return membership


async def _member_read(session: AsyncSession, membership: Membership) -> MemberRead:
    user = await user_crud.get_user(session, membership.user_id)
    assert user is not None
    return MemberRead(
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=Role(membership.role),
        created_at=membership.created_at,
    )


# --- API keys -------------------------------------------------------------------------------


async def create_api_key(
    session: AsyncSession, principal: Principal, request: ApiKeyCreate
) -> ApiKeyCreated:
    secret = new_api_key()
    api_key = await crud.create_api_key(
        session,
        ApiKey(
            organization_id=principal.organization_id,
            name=request.name,
            role=request.role,
            display_prefix=secret[:API_KEY_DISPLAY_LENGTH],
            key_hash=hash_secret(secret),
            created_by=principal.user_id,
            expires_at=request.expires_at,
        ),
    )
    return ApiKeyCreated(**ApiKeyRead.model_validate(api_key).model_dump(), key=secret)


async def revoke_api_key(session: AsyncSession, principal: Principal, key_id: uuid.UUID) -> None:
    api_key = await crud.get_api_key(session, principal.organization_id, key_id)
    if api_key is None:
        raise NotFound("API key not found")
    await crud.revoke_api_key(session, api_key.id)


def _org_fields(organization: Organization) -> dict[str, object]:
    return OrganizationRead.model_validate(organization).model_dump()
