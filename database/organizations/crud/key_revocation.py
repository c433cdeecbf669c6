"""Revoking API keys, with what was made with them: a key made with a key is revoked with it
(and the keys made with that one, and so on), so is an unanswered invitation sent with any of
them, and the key making one or sending one is held while it does. Flush, never commit."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from database.organizations.models import ApiKey, Invitation


@dataclass(frozen=True)
class Sweep:
    keys: int  # live keys revoked now
    invitations: int  # unanswered invitations sent with any of the keys swept, revoked now


async def _revoke_made_with(session: AsyncSession, key_ids: Sequence[uuid.UUID]) -> Sweep:
    """Revokes every live key made with these keys, or with those, and so on, and every
    unanswered invitation sent with any of them. A generation at a time, each locked in id
    order before it is revoked: a key being made with one of them (which holds it) is waited
    for and then found by the next generation's statement, and two sweeps of one tree take its
    keys in one order. The invitations last: one being sent with a key (which holds it) is
    committed by then."""
    frontier, revoked, seen = list(key_ids), 0, set(key_ids)
    while frontier:
        made = await session.scalars(
            select(ApiKey.id)
            .where(ApiKey.created_with_key_id.in_(frontier))
            .order_by(ApiKey.id)
            .with_for_update(key_share=True)
        )
        frontier = [key for key in made.all() if key not in seen]
        seen.update(frontier)
        if frontier:
            result = await session.execute(
                update(ApiKey)
                .where(ApiKey.id.in_(frontier), ApiKey.revoked_at.is_(None))
                .values(revoked_at=func.now())
                .returning(ApiKey.id)
            )
            revoked += len(result.all())
    invitations = await session.execute(
        update(Invitation)
        .where(
            Invitation.created_with_key_id.in_(seen),
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
        .values(revoked_at=func.now())
        .returning(Invitation.id)
    )
    return Sweep(revoked, len(invitations.all()))


@dataclass(frozen=True)
class KeyRevocation:
    was_live: bool  # the key itself was revoked now (not before)
    made_with_it: Sweep  # what was made or sent with it (or with those), revoked now


async def revoke_api_key(session: AsyncSession, key_id: uuid.UUID) -> KeyRevocation:
    """Revokes a live key, and every live key made with it (or with those, and so on) and
    invitation sent with them: those are revoked also when the key was revoked already (made
    while it was being revoked, or before it was revoked another way)."""
    revoked = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(ApiKey.id)
    )
    was_live = revoked.first() is not None
    return KeyRevocation(was_live, await _revoke_made_with(session, [key_id]))


async def revoke_api_keys_created_by(
    session: AsyncSession, user_id: uuid.UUID, roles: Collection[str] | None = None
) -> Sweep:
    """Revokes the live keys a user created in the current organization (of `roles` only,
    when given), and what was made or sent with those; how many keys in all, and how many
    invitations."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.created_by == user_id, ApiKey.revoked_at.is_(None))
        .where(ApiKey.role.in_(roles) if roles is not None else true())
        .values(revoked_at=func.now())
        .returning(ApiKey.id)
    )
    revoked = [row.id for row in result.all()]
    made_with_them = await _revoke_made_with(session, revoked)
    return Sweep(len(revoked) + made_with_them.keys, made_with_them.invitations)


async def hold_live_api_key(session: AsyncSession, key_id: uuid.UUID) -> ApiKey | None:
    """The key, held (FOR SHARE) until the transaction ends, if it is live: a revocation
    meanwhile waits for what is made with it to be committed, then revokes that too."""
    return await session.scalar(
        select(ApiKey)
        .where(
            ApiKey.id == key_id,
            ApiKey.revoked_at.is_(None),
            (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > func.now()),
        )
        .with_for_update(read=True)
        .execution_options(populate_existing=True)
    )
