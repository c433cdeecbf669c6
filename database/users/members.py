"""The members of an organization: users with a role in it. Who may grant which role and the
rule that an organization keeps an owner are the organizations entity's; these flows apply them
to users."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from database.core import Tenant, acting_as
from database.organizations import crud as org_crud
from database.organizations.models import Membership
from database.organizations.service import check_may_grant, keep_an_owner
from database.users import crud
from database.users.models import User
from database.users.schemas import MemberRead
from utils.auth import Principal, Role
from utils.errors import Conflict, Forbidden, NotFound


async def list_members(
    session: AsyncSession, organization_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[MemberRead], int]:
    rows, total = await crud.list_members(session, organization_id, limit=limit, offset=offset)
    return [_as_read(membership, user) for membership, user in rows], total


async def add_member(
    session: AsyncSession, principal: Principal, email: str, role: Role
) -> MemberRead:
    check_may_grant(principal, role)
    user_id = await crud.find_user_id_by_email(session, email)
    if user_id is None:
        raise NotFound("No registered user has this email; they must register first")
    membership = await org_crud.add_membership(
        session, organization_id=principal.organization_id, user_id=user_id, role=role
    )
    return await _member_read(session, membership)


async def change_member_role(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID, role: Role
) -> MemberRead:
    membership = await _get_member(session, principal, user_id)
    current = Role(membership.role)
    check_may_grant(principal, current)
    check_may_grant(principal, role)
    if current is Role.owner and role is not Role.owner:
        await keep_an_owner(session, principal)
    membership.role = role
    await org_crud.save_membership(session)
    return await _member_read(session, membership)


async def remove_member(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> None:
    membership = await _get_member(session, principal, user_id)
    leaving_self = principal.user_id == user_id
    if not leaving_self:
        if not principal.role.at_least(Role.admin):
            raise Forbidden("Removing members needs the admin role")
        check_may_grant(principal, Role(membership.role))
    if membership.role == Role.owner:
        await keep_an_owner(session, principal)
    await org_crud.remove_membership(session, membership)
    # The keys they created go with them: a key outliving its maker's access would keep what
    # the organization just took away (a new admin makes new keys for what must go on).
    await org_crud.revoke_api_keys_created_by(session, user_id)
    # Login sessions are visible only to their own user (row-level security): end the removed
    # user's sessions in this organization as them (their stream tokens end with them).
    async with acting_as(session, Tenant(principal.organization_id, user_id)):
        await crud.revoke_user_sessions(session, user_id)


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
    await org_crud.save_membership(session)
    return [await _member_read(session, target), await _member_read(session, mine)]


async def _get_member(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID
) -> Membership:
    membership = await org_crud.get_membership(session, principal.organization_id, user_id)
    if membership is None:
        raise NotFound("Member not found")
    return membership


async def _member_read(session: AsyncSession, membership: Membership) -> MemberRead:
    user = await crud.get_user(session, membership.user_id)
    assert user is not None
    return _as_read(membership, user)


def _as_read(membership: Membership, user: User) -> MemberRead:
    return MemberRead(
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=Role(membership.role),
        created_at=membership.created_at,
    )
