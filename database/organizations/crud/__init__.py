"""Queries of organizations, memberships, API keys and invitations (revoking keys is in
key_revocation.py, the audit log's queries in audit_log.py). Flush, never commit."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from database.core import Tenant, acting_apart
from database.driver import driver_connection
from database.organizations.models import (
    ApiKey,
    Invitation,
    Membership,
    Organization,
)
from utils.crud import delete_once, paginate
from utils.errors import Conflict

LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class ApiKeyLookup:
    id: uuid.UUID
    organization_id: uuid.UUID
    role: str
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class InvitationLookup:
    id: uuid.UUID
    organization_id: uuid.UUID
    email: str
    role: str


# --- organizations --------------------------------------------------------------------------


async def create_organization(session: AsyncSession, organization: Organization) -> Organization:
    session.add(organization)
    await session.flush()
    return organization


async def get_organization(
    session: AsyncSession, organization_id: uuid.UUID, *, for_update: bool = False
) -> Organization | None:
    if for_update:
        return await session.get(
            Organization, organization_id, with_for_update=True, populate_existing=True
        )
    return await session.get(Organization, organization_id)


async def list_user_organizations(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[tuple[Organization, str]], int]:
    query = (
        select(Organization, Membership.role)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.user_id == user_id)
    )
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.execute(
        query.order_by(Organization.created_at, Organization.id).limit(limit).offset(offset)
    )
    return [(org, role) for org, role in rows.all()], total or 0


async def save_organization(session: AsyncSession) -> None:
    await session.flush()


async def delete_organization(session: AsyncSession, organization: Organization) -> None:
    """A 404 when another request deleted it first: only the deleting request records it."""
    await delete_once(session, organization, "Organization")


# --- memberships ----------------------------------------------------------------------------


async def add_membership(
    session: AsyncSession, *, organization_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> Membership:
    membership = Membership(organization_id=organization_id, user_id=user_id, role=role)
    session.add(membership)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("This user is already a member of the organization") from exc
    return membership


async def get_membership(
    session: AsyncSession,
    organization_id: uuid.UUID,
    user_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> Membership | None:
    """`for_update`: locked for a change of its role (a key's maker's hold does not wait)."""
    query = select(Membership).where(
        Membership.organization_id == organization_id, Membership.user_id == user_id
    )
    return await session.scalar(query.with_for_update(key_share=True) if for_update else query)


async def hold_membership(
    session: AsyncSession, organization_id: uuid.UUID, user_id: uuid.UUID
) -> str | None:
    """Locks a member's row against removal and role changes until the transaction ends (FOR
    SHARE), and returns their role as it then stands; None if they are no longer a member."""
    return await session.scalar(
        select(Membership.role)
        .where(Membership.organization_id == organization_id, Membership.user_id == user_id)
        .with_for_update(read=True)  # FOR SHARE
    )


async def lock_memberships(session: AsyncSession, organization_id: uuid.UUID) -> None:
    """Locks every membership of the organization, as deleting it is about to (FOR UPDATE, in
    user order, as every lock of memberships): a member's change or what a member makes, which
    hold memberships first, are then waited for, never left waiting on the deletion while it
    waits on them."""
    await session.execute(
        select(Membership.id)
        .where(Membership.organization_id == organization_id)
        .order_by(Membership.user_id)
        .with_for_update()
    )


async def first_membership(session: AsyncSession, user_id: uuid.UUID) -> Membership | None:
    """The user's oldest membership: the organization a login lands in."""
    return await session.scalar(
        select(Membership)
        .where(Membership.user_id == user_id)
        .order_by(Membership.created_at, Membership.id)
        .limit(1)
    )


@dataclass(frozen=True)
class LockedMember:
    member: Membership | None  # as they now stand
    owners: int
    actor_role: str | None  # of the member acting (None: no longer one)


async def lock_member_and_owners(
    session: AsyncSession, organization_id: uuid.UUID, user_id: uuid.UUID, actor: uuid.UUID
) -> LockedMember:
    """For a change of a member's role: their row, every owner's and the acting member's,
    locked in one statement (FOR NO KEY UPDATE, in user order, as every lock of memberships:
    two cannot wait for each other). Two demotions at once cannot leave no owner, nor can a
    demotion of someone just made owner go by as that of a plain member, nor an admin removed
    or demoted meanwhile change anyone's role with the role they had."""
    rows = await session.scalars(
        select(Membership)
        .where(
            Membership.organization_id == organization_id,
            (Membership.role == "owner") | Membership.user_id.in_((user_id, actor)),
        )
        .order_by(Membership.user_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    locked = rows.all()
    member = next((row for row in locked if row.user_id == user_id), None)
    acting = next((row.role for row in locked if row.user_id == actor), None)
    return LockedMember(member, sum(row.role == "owner" for row in locked), acting)


async def save_membership(session: AsyncSession) -> None:
    await session.flush()


async def remove_membership(session: AsyncSession, membership: Membership) -> None:
    await session.delete(membership)
    await session.flush()


# --- API keys -------------------------------------------------------------------------------


async def create_api_key(session: AsyncSession, api_key: ApiKey) -> ApiKey:
    session.add(api_key)
    await session.flush()
    return api_key


async def list_api_keys(
    session: AsyncSession, organization_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[ApiKey], int]:
    query = (
        select(ApiKey)
        .where(ApiKey.organization_id == organization_id)
        .order_by(ApiKey.created_at.desc(), ApiKey.id)
    )
    return await paginate(session, query, limit=limit, offset=offset)


async def get_api_key(
    session: AsyncSession, organization_id: uuid.UUID, key_id: uuid.UUID
) -> ApiKey | None:
    return await session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.organization_id == organization_id)
    )


async def find_api_key(session: AsyncSession, key_hash: str) -> ApiKeyLookup | None:
    """Looks a key up by its hash before any tenant is known (a SECURITY DEFINER function);
    on every request that sends one, so on the driver's connection."""
    driver = await driver_connection(session, in_transaction=False)
    row = await driver.fetchrow(_FIND_API_KEY, key_hash)
    return ApiKeyLookup(*row) if row else None


_FIND_API_KEY = (
    "SELECT id, organization_id, role, expires_at, revoked_at FROM assay_auth_api_key($1)"
)


async def touch_api_key(
    session: AsyncSession, organization_id: uuid.UUID, key_id: uuid.UUID
) -> float | None:
    """Records use, at most once per LAST_USED_RESOLUTION per key, so busy keys don't write on
    every call; the seconds until the key's next use is due to be recorded (whoever recorded
    the last one), None if the key is not visible.

    In a transaction apart, committed before the request's begins: the key's row is locked for
    that moment only, not while the request runs (its other requests, and its revocation,
    would wait for it)."""
    async with acting_apart(session, Tenant(organization_id)) as driver:
        remaining = await driver.fetchval(_TOUCH_API_KEY, key_id, LAST_USED_RESOLUTION)
    return None if remaining is None else float(remaining)


# The data-modifying CTE's new value, else the row as it was (another caller's touch).
_TOUCH_API_KEY = """
WITH touched AS (
    UPDATE api_keys SET last_used_at = statement_timestamp()
    WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < statement_timestamp() - $2::interval)
    RETURNING last_used_at
)
SELECT extract(epoch FROM coalesce(
    (SELECT last_used_at FROM touched), (SELECT last_used_at FROM api_keys WHERE id = $1)
) + $2::interval - statement_timestamp())
"""


async def api_key_is_live(session: AsyncSession, key_id: uuid.UUID) -> bool:
    """Whether a key of the current organization is neither revoked nor expired."""
    live = await session.scalar(
        select(ApiKey.id).where(
            ApiKey.id == key_id,
            ApiKey.revoked_at.is_(None),
            (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > func.now()),
        )
    )
    return live is not None


# --- invitations ----------------------------------------------------------------------------

_UNANSWERED = (Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))


async def create_invitation(session: AsyncSession, invitation: Invitation) -> Invitation:
    session.add(invitation)
    await session.flush()
    return invitation


async def list_invitations(
    session: AsyncSession, organization_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[Invitation], int]:
    query = (
        select(Invitation)
        .where(Invitation.organization_id == organization_id)
        .order_by(Invitation.created_at.desc(), Invitation.id.desc())
    )
    return await paginate(session, query, limit=limit, offset=offset)


async def get_invitation(
    session: AsyncSession, organization_id: uuid.UUID, invitation_id: uuid.UUID
) -> Invitation | None:
    """The invitation as it stands now (read again if the session holds it already)."""
    return await session.scalar(
        select(Invitation)
        .where(Invitation.id == invitation_id, Invitation.organization_id == organization_id)
        .execution_options(populate_existing=True)
    )


async def find_invitation(session: AsyncSession, token_hash: str) -> InvitationLookup | None:
    """Looks an invitation up by its token's hash: the invitee is no member of its organization
    yet, so row-level security hides it from them (a SECURITY DEFINER function)."""
    row = (
        await session.execute(
            text("SELECT id, organization_id, email, role FROM assay_auth_invitation(:hash)"),
            {"hash": token_hash},
        )
    ).first()
    return InvitationLookup(*row) if row else None


async def hold_invitations_to(session: AsyncSession, email: str) -> None:
    """Locks the unanswered invitations to `email` in the current organization, in id order:
    two of them accepted at once are then taken one after the other (the second finds its own
    revoked by the first), where each spending its own, then waiting on the other's, was a
    deadlock (a 409 whose retry was a 404)."""
    await session.execute(
        select(Invitation.id)
        .where(func.lower(Invitation.email) == email.lower(), *_UNANSWERED)
        .order_by(Invitation.id)
        .with_for_update()
    )


async def accept_invitation(
    session: AsyncSession, invitation_id: uuid.UUID, user_id: uuid.UUID
) -> bool:
    """Spends an invitation of the current organization at once; False unless it was pending
    (neither accepted, revoked nor expired)."""
    spent = await session.execute(
        update(Invitation)
        .where(
            Invitation.id == invitation_id,
            *_UNANSWERED,
            Invitation.expires_at > func.now(),
        )
        .values(accepted_at=func.now(), accepted_by=user_id)
        .returning(Invitation.id)
    )
    return spent.first() is not None


async def revoke_invitation(
    session: AsyncSession, organization_id: uuid.UUID, invitation_id: uuid.UUID
) -> InvitationLookup | None:
    """Revokes an unanswered invitation and returns it; None when there is none such (unknown,
    accepted or revoked already: read it to tell which)."""
    revoked = await session.execute(
        update(Invitation)
        .where(
            Invitation.id == invitation_id,
            Invitation.organization_id == organization_id,
            *_UNANSWERED,
        )
        .values(revoked_at=func.now())
        .returning(Invitation.id, Invitation.organization_id, Invitation.email, Invitation.role)
    )
    row = revoked.first()
    return InvitationLookup(*row) if row else None


async def revoke_invitations_created_by(
    session: AsyncSession, user_id: uuid.UUID, roles: Collection[str] | None = None
) -> int:
    """Revokes the unanswered invitations a user sent in the current organization (to
    `roles` only, when given); how many."""
    revoked = await session.execute(
        update(Invitation)
        .where(Invitation.created_by == user_id, *_UNANSWERED)
        .where(Invitation.role.in_(roles) if roles is not None else true())
        .values(revoked_at=func.now())
        .returning(Invitation.id)
    )
    return len(revoked.all())


async def revoke_invitations_to(session: AsyncSession, email: str) -> int:
    """Revokes the unanswered invitations to `email` in the current organization: once its
    owner joins, leaves or is removed, none of them may bring that account (back) in. How
    many."""
    revoked = await session.execute(
        update(Invitation)
        .where(func.lower(Invitation.email) == email.lower(), *_UNANSWERED)
        .values(revoked_at=func.now())
        .returning(Invitation.id)
    )
    return len(revoked.all())
