"""Queries of the response cache: a target's answers, kept by the hash of what was asked."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.models import CachedResponse


async def cached_response(session: AsyncSession, key: str) -> CachedResponse | None:
    return await session.scalar(select(CachedResponse).where(CachedResponse.key == key))


async def store_response(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(
        insert(CachedResponse)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["organization_id", "key"])
    )
