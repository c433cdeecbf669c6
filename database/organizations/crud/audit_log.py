"""Queries of the audit log. Flush, never commit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from database.organizations.models import AuditEntry


@dataclass(frozen=True)
class AuditFilters:
    action: str | None = None
    actor_user_id: uuid.UUID | None = None
    actor_api_key_id: uuid.UUID | None = None
    target_type: str | None = None
    target_id: uuid.UUID | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


async def add_audit_entry(session: AsyncSession, values: dict[str, Any]) -> None:
    """Appends an entry (a plain INSERT: the runtime may insert and read audit rows, never
    update them, so no ORM object is kept to be flushed again)."""
    await session.execute(insert(AuditEntry).values(**values))


async def list_audit_entries(
    session: AsyncSession,
    organization_id: uuid.UUID,
    filters: AuditFilters,
    *,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> tuple[list[AuditEntry], int]:
    """Newest first, after the keyset `before` (the last entry of the previous page); and how
    many entries match the filters in all."""
    where = [AuditEntry.organization_id == organization_id]
    for column, value in (
        (AuditEntry.action, filters.action),
        (AuditEntry.actor_user_id, filters.actor_user_id),
        (AuditEntry.actor_api_key_id, filters.actor_api_key_id),
        (AuditEntry.target_type, filters.target_type),
        (AuditEntry.target_id, filters.target_id),
    ):
        if value is not None:
            where.append(column == value)
    if filters.since is not None:
        where.append(AuditEntry.created_at >= filters.since)
    if filters.until is not None:
        where.append(AuditEntry.created_at < filters.until)
    total = await session.scalar(select(func.count()).select_from(AuditEntry).where(*where))
    page = select(AuditEntry).where(*where)
    if before is not None:
        page = page.where(tuple_(AuditEntry.created_at, AuditEntry.id) < before)
    rows = await session.scalars(
        page.order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc()).limit(limit)
    )
    return list(rows.all()), total or 0
