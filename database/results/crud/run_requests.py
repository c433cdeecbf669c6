"""A run asked for with an Idempotency-Key: found again by it, one request at a time."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.models import Run


async def hold_request_key(session: AsyncSession, organization_id: uuid.UUID, key: str) -> None:
    """Until the transaction ends: requests with the same key (in one organization) take
    turns, so the later one finds the run the first made rather than fail on its index."""
    name = f"run-request:{organization_id}:{key}"
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(name, 0))))


async def run_of_request(session: AsyncSession, key: str) -> Run | None:
    """The organization's run asked for with `key` (row-level security scopes the read)."""
    found = await session.scalars(select(Run).where(Run.request_key == key))
    return found.one_or_none()
