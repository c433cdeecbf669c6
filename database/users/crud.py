"""Queries of users, login sessions and refresh tokens. Flush, never commit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from database.driver import driver_connection
from database.organizations.models import Membership
from database.users.models import AuthSession, RefreshToken, User
from utils.errors import Conflict


@dataclass(frozen=True)
class LoginCandidate:
    id: uuid.UUID
    password_hash: str
    is_active: bool


@dataclass(frozen=True)
class RefreshTokenLookup:
    id: uuid.UUID
    session_id: uuid.UUID
    user_id: uuid.UUID
    organization_id: uuid.UUID
    expires_at: datetime
    used_at: datetime | None
    session_revoked_at: datetime | None


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def read_user(session: AsyncSession, user_id: uuid.UUID) -> dict[str, Any] | None:
    """What `GET /users/me` shows of the user, as a plain row (no entity to keep)."""
    row = await (await driver_connection(session)).fetchrow(
        "SELECT id, email, name, created_at FROM users WHERE id = $1", user_id
    )
    return dict(row.items()) if row else None


async def read_user_locked(session: AsyncSession, user_id: uuid.UUID) -> dict[str, Any] | None:
    """`read_user`, the row locked until the transaction ends (FOR NO KEY UPDATE): what one
    login decides for the account, another waits for."""
    row = await (await driver_connection(session)).fetchrow(
        "SELECT id, email, name, created_at FROM users WHERE id = $1 FOR NO KEY UPDATE", user_id
    )
    return dict(row.items()) if row else None


async def find_login_candidate(session: AsyncSession, email: str) -> LoginCandidate | None:
    """Looks a user up by email before any tenant is known (a SECURITY DEFINER function)."""
    row = (
        await session.execute(
            text("SELECT id, password_hash, is_active FROM assay_auth_user_by_email(:email)"),
            {"email": email},
        )
    ).first()
    return LoginCandidate(*row) if row else None


async def find_user_id_by_email(session: AsyncSession, email: str) -> uuid.UUID | None:
    candidate = await find_login_candidate(session, email)
    return candidate.id if candidate else None


async def create_user(session: AsyncSession, user: User) -> User:
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(
            "A user with this email already exists",
            errors=[{"field": "email", "message": "is taken"}],
        ) from exc
    return user


async def save_user(session: AsyncSession) -> None:
    await session.flush()


async def create_auth_session(
    session: AsyncSession, *, user_id: uuid.UUID, organization_id: uuid.UUID
) -> AuthSession:
    auth_session = AuthSession(user_id=user_id, organization_id=organization_id)
    session.add(auth_session)
    await session.flush()
    return auth_session


async def get_session_role(session: AsyncSession, session_id: uuid.UUID) -> tuple[str, bool] | None:
    """The caller's current role and whether the user is active, for a live login session.

    Reading the membership on each request makes a demotion or removal effective at once,
    whatever role an older access token still claims.
    """
    row = await (await driver_connection(session)).fetchrow(_SESSION_ROLE, session_id)
    return (row[0], row[1]) if row else None


# On every request with an access token, so on the driver's connection.
_SESSION_ROLE = """
SELECT m.role, u.is_active
FROM auth_sessions s
JOIN memberships m ON m.organization_id = s.organization_id AND m.user_id = s.user_id
JOIN users u ON u.id = s.user_id
WHERE s.id = $1 AND s.revoked_at IS NULL
"""


async def revoke_auth_session(session: AsyncSession, session_id: uuid.UUID) -> None:
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )


async def user_organization_ids(session: AsyncSession, user_id: uuid.UUID) -> list[uuid.UUID]:
    """The organizations the user belongs to (their own memberships are visible to them)."""
    rows = await session.scalars(
        select(Membership.organization_id).where(Membership.user_id == user_id)
    )
    return list(rows.all())


async def revoke_user_sessions(
    session: AsyncSession, user_id: uuid.UUID, *, except_session: uuid.UUID | None = None
) -> None:
    """Ends the user's sessions in the current organization (RLS limits it to that)."""
    query = update(AuthSession).where(
        AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
    )
    if except_session is not None:
        query = query.where(AuthSession.id != except_session)
    await session.execute(query.values(revoked_at=func.now()))


async def add_refresh_token(
    session: AsyncSession,
    *,
    auth_session: AuthSession,
    token_hash: str,
    expires_at: datetime,
) -> RefreshToken:
    token = RefreshToken(
        session_id=auth_session.id,
        user_id=auth_session.user_id,
        organization_id=auth_session.organization_id,
        token_hash=token_hash,
        expires_at=expires_at,
    )
    session.add(token)
    await session.flush()
    return token


async def find_refresh_token(session: AsyncSession, token_hash: str) -> RefreshTokenLookup | None:
    row = (
        await session.execute(
            text(
                "SELECT id, session_id, user_id, organization_id, expires_at, used_at,"
                " session_revoked_at FROM assay_auth_refresh_token(:hash)"
            ),
            {"hash": token_hash},
        )
    ).first()
    return RefreshTokenLookup(*row) if row else None


async def mark_refresh_token_used(session: AsyncSession, token_id: uuid.UUID) -> bool:
    """Atomically spends a refresh token; False when it was already spent (a replay)."""
    spent = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token_id, RefreshToken.used_at.is_(None))
        .values(used_at=func.now())
        .returning(RefreshToken.id)
    )
    return spent.first() is not None


async def get_auth_session(session: AsyncSession, session_id: uuid.UUID) -> AuthSession | None:
    return await session.get(AuthSession, session_id)


# --- members of an organization (memberships, with the users they are) ----------------------


async def list_members(
    session: AsyncSession, organization_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[tuple[Membership, User]], int]:
    where = Membership.organization_id == organization_id
    total = await session.scalar(select(func.count()).select_from(Membership).where(where))
    rows = await session.execute(
        select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .where(where)
        .order_by(Membership.created_at, Membership.id)
        .limit(limit)
        .offset(offset)
    )
    return [(m, u) for m, u in rows.all()], total or 0
