"""Pages of a run's results, in (position, repetition) order: by offset, or after a key (a
keyset page costs the same at any depth, and while results are added as a client walks the
run no row is repeated and none there at the start is skipped; one added behind the key, as
cases finish out of order, is not in that walk)."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.models import Result

Key = tuple[int, int]  # (position, repetition)


async def results_page(
    session: AsyncSession,
    run_id: uuid.UUID,
    *,
    status: str | None,
    limit: int,
    offset: int = 0,
    after: Key | None = None,
) -> tuple[list[Result], int]:
    """Up to `limit` results after `after` (else after `offset` of them), and the total that
    match."""
    query = select(Result).where(Result.run_id == run_id)
    if status is not None:
        query = query.where(Result.status == status)
    total = await session.scalar(query.with_only_columns(func.count()).order_by(None)) or 0
    if after is not None:
        query = query.where(tuple_(Result.position, Result.repetition) > tuple_(*after))
    elif offset:
        query = query.offset(offset)
    rows = await session.scalars(query.order_by(Result.position, Result.repetition).limit(limit))
    return list(rows.all()), total
