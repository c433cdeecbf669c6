"""The members of an organization: users with a role in it, who join by accepting an
invitation. Who may grant which role and the rule that an organization keeps an owner are the
organizations entity's; these flows apply them to users, and record every change in the
organization's audit log."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from database.core import Tenant, acting_as
from database.organizations import crud as org_crud
from database.organizations.audit import RequestMeta, record
from database.organizations.crud import key_revocation
from database.organizations.models import Invitation, Membership
from database.organizations.schemas import MyOrganizationRead, OrganizationRead
from database.organizations.service import (
    answerable_user,
    check_may_grant,
    hold_caller,
    keep_an_owner,
    locked_member,
    making_key_expiry,
)
from database.users import crud
from database.users.models import User
from database.users.schemas import (
    InvitationCreate,
    InvitationCreated,
    InvitationRead,
    MemberRead,
)
from utils.auth import Principal, Role, hash_secret
from utils.errors import Conflict, Forbidden, NotFound, Unauthorized
from utils.runtime import Runtime

INVITATION_TOKEN_PREFIX = "assay_inv_"
# One answer for an unknown, spent, revoked or expired token and for another account's
# invitation: the answer tells nothing about invitations that are not yours to accept.
INVITATION_NOT_FOUND = "No invitation for your account has this token (or it has expired)"


async def list_members(
    session: AsyncSession, organization_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[MemberRead], int]:
    rows, total = await crud.list_members(session, organization_id, limit=limit, offset=offset)
    return [_as_read(membership, user) for membership, user in rows], total


async def change_member_role(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID, role: Role, meta: RequestMeta
) -> MemberRead:
    membership, owners, principal = await locked_member(session, principal, user_id)
    if not principal.role.at_least(Role.admin):
        raise Forbidden("Changing a member's role needs the admin role")
    current = Role(membership.role)
    check_may_grant(principal, current)
    check_may_grant(principal, role)
    if current is Role.owner and role is not Role.owner:
        keep_an_owner(owners)
    if role is not current:
        membership.role = role
        await org_crud.save_membership(session)
        await _role_changed(session, principal, user_id, current, role, meta)
    return await _member_read(session, membership)


async def _role_changed(
    session: AsyncSession,
    principal: Principal,
    user_id: uuid.UUID,
    before: Role,
    after: Role,
    meta: RequestMeta,
    **details: object,
) -> None:
    if after.rank < before.rank:
        # What they made that grants more than they now hold goes, as all of it goes with a
        # member removed: an admin key would keep what a demotion just took away.
        above = [role for role in Role if role.rank > after.rank]
        swept = await key_revocation.revoke_api_keys_created_by(session, user_id, above)
        sent = await org_crud.revoke_invitations_created_by(session, user_id, above)
        if swept.keys:
            details["api_keys_revoked"] = swept.keys
        if swept.invitations + sent:
            details["invitations_revoked"] = swept.invitations + sent
    await record(
        session,
        principal,
        action="member.role_changed",
        target_type="member",
        target_id=user_id,
        details={"from": before, "to": after, **details},
        request_meta=meta,
    )


async def remove_member(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID, meta: RequestMeta
) -> None:
    membership, owners, principal = await locked_member(session, principal, user_id)
    leaving_self = principal.user_id == user_id
    if not leaving_self:
        if not principal.role.at_least(Role.admin):
            raise Forbidden("Removing members needs the admin role")
        check_may_grant(principal, Role(membership.role))
    if membership.role == Role.owner:
        keep_an_owner(owners)
    removed = await crud.get_user(session, user_id)  # (seen while a fellow member)
    await org_crud.remove_membership(session, membership)
    # The keys they created go with them: a key outliving its maker's access would keep what
    # the organization just took away (a new admin makes new keys for what must go on). So do
    # their unanswered invitations.
    swept = await key_revocation.revoke_api_keys_created_by(session, user_id)
    invitations_revoked = swept.invitations
    invitations_revoked += await org_crud.revoke_invitations_created_by(session, user_id)
    # Nor may an invitation sent to them before bring them back: a viewer leaving to accept
    # an older admin invitation, a removed member accepting a resent one.
    if removed is not None:
        invitations_revoked += await org_crud.revoke_invitations_to(session, removed.email)
    await record(
        session,
        principal,
        action="member.removed",
        target_type="member",
        target_id=user_id,
        details={
            "role": membership.role,
            "left": leaving_self,
            "api_keys_revoked": swept.keys,
            "invitations_revoked": invitations_revoked,
        },
        request_meta=meta,
    )
    # Login sessions are visible only to their own user (row-level security): end the removed
    # user's sessions in this organization as them (their stream tokens end with them).
    async with acting_as(session, Tenant(principal.organization_id, user_id)):
        await crud.revoke_user_sessions(session, user_id)


async def transfer_ownership(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID, meta: RequestMeta
) -> list[MemberRead]:
    me = principal.require_user()
    if user_id == me:
        raise Conflict("You already own this organization")
    # Both rows locked, in one order whoever transfers, so that a removal or another transfer
    # meanwhile is waited for and seen (not an update of a row gone, nor of a role changed).
    locked = {
        member: await org_crud.get_membership(
            session, principal.organization_id, member, for_update=True
        )
        for member in sorted((me, user_id))
    }
    target, mine = locked[user_id], locked[me]
    if mine is None:
        raise Unauthorized("You are no longer a member of this organization")
    if target is None:
        raise NotFound("Member not found")
    if mine.role != Role.owner:
        raise Conflict("You no longer own this organization")
    changes = [(target, Role.owner), (mine, Role.admin)]
    before = [Role(membership.role) for membership, _ in changes]
    for membership, role in changes:
        membership.role = role
    await org_crud.save_membership(session)
    for (membership, role), was in zip(changes, before, strict=True):
        if role is not was:
            await _role_changed(
                session, principal, membership.user_id, was, role, meta, via="ownership_transfer"
            )
    return [await _member_read(session, target), await _member_read(session, mine)]


# --- invitations ----------------------------------------------------------------------------


async def invite(
    session: AsyncSession,
    runtime: Runtime,
    principal: Principal,
    body: InvitationCreate,
    meta: RequestMeta,
) -> InvitationCreated:
    """Whether the email has an account is never looked at here: the answer is the same."""
    check_may_grant(principal, body.role)
    created_by = await answerable_user(session, principal, body.role)
    key_expiry = await making_key_expiry(session, principal)  # one sent with a key: not past it
    # Counted once allowed: a request refused above spends none of the organization's hour.
    settings = runtime.settings
    await runtime.rate_limiter.hit(
        "invitations", str(principal.organization_id), f"{settings.invitations_per_hour}/hour"
    )
    token = INVITATION_TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(hours=settings.invitation_hours)
    invitation = await org_crud.create_invitation(
        session,
        Invitation(
            organization_id=principal.organization_id,
            email=body.email,
            role=body.role,
            token_hash=hash_secret(token),
            created_by=created_by,
            created_with_key_id=principal.api_key_id,
            expires_at=min(expires_at, key_expiry) if key_expiry else expires_at,
        ),
    )
    await record(
        session,
        principal,
        action="invitation.sent",
        target_type="invitation",
        target_id=invitation.id,
        details={"email": invitation.email, "role": invitation.role},
        request_meta=meta,
    )
    return InvitationCreated(**InvitationRead.model_validate(invitation).model_dump(), token=token)


async def list_invitations(
    session: AsyncSession, organization_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[InvitationRead], int]:
    rows, total = await org_crud.list_invitations(
        session, organization_id, limit=limit, offset=offset
    )
    return [InvitationRead.model_validate(row) for row in rows], total


async def revoke_invitation(
    session: AsyncSession, principal: Principal, invitation_id: uuid.UUID, meta: RequestMeta
) -> None:
    """Revoking twice is no error; revoking an accepted invitation is (remove the member). Only
    an owner revokes an invitation to be an owner, as only an owner sends one (or revokes it
    again)."""
    principal = (await hold_caller(session, principal, Role.admin)).principal
    organization_id = principal.organization_id
    invitation = await org_crud.get_invitation(session, organization_id, invitation_id)
    if invitation is None:
        raise NotFound("Invitation not found")
    check_may_grant(principal, Role(invitation.role))
    revoked = await org_crud.revoke_invitation(session, organization_id, invitation_id)
    if revoked is not None:
        await record(
            session,
            principal,
            action="invitation.revoked",
            target_type="invitation",
            target_id=revoked.id,
            details={"email": revoked.email, "role": revoked.role},
            request_meta=meta,
        )
        return
    # Read again: accepted since it was read above, it is not to be revoked.
    invitation = await org_crud.get_invitation(session, organization_id, invitation_id)
    if invitation is not None and invitation.accepted_at is not None:
        raise Conflict("This invitation was accepted; remove the member instead")


async def accept_invitation(
    session: AsyncSession, principal: Principal, token: str, meta: RequestMeta
) -> MyOrganizationRead:
    """Joins the invitation's organization with its role, if it is for your account's email."""
    user_id = principal.require_user()
    found = await org_crud.find_invitation(session, hash_secret(token))
    user = await crud.get_user(session, user_id)
    if found is None or user is None or found.email.lower() != user.email.lower():
        raise NotFound(INVITATION_NOT_FOUND)
    # Not a member yet: act in the inviting organization, as yourself, to join it.
    async with acting_as(session, Tenant(found.organization_id, user_id)):
        await org_crud.hold_invitations_to(session, found.email)
        if not await org_crud.accept_invitation(session, found.id, user_id):
            raise NotFound(INVITATION_NOT_FOUND)
        if await org_crud.get_membership(session, found.organization_id, user_id) is not None:
            # The whole request rolls back: the invitation stays unanswered.
            raise Conflict("You are already a member of this organization")
        await org_crud.add_membership(
            session, organization_id=found.organization_id, user_id=user_id, role=found.role
        )
        others = await org_crud.revoke_invitations_to(session, found.email)
        details: dict[str, object] = {"email": found.email, "role": found.role, "user_id": user_id}
        if others:
            details["invitations_revoked"] = others
        await record(
            session,
            principal,
            action="invitation.accepted",
            target_type="invitation",
            target_id=found.id,
            details=details,
            request_meta=meta,
            organization_id=found.organization_id,
        )
        organization = await org_crud.get_organization(session, found.organization_id)
    assert organization is not None
    return MyOrganizationRead(
        **OrganizationRead.model_validate(organization).model_dump(), role=Role(found.role)
    )


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
