"""Query helpers shared by the entities' crud modules."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, InvalidInput


async def paginate(
    session: AsyncSession, query: Select[Any], *, limit: int, offset: int
) -> tuple[list[Any], int]:
    """One page of a query's rows and the total the query would return."""
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = await session.scalars(query.limit(limit).offset(offset))
    return list(rows.all()), total or 0


async def flush_unique(session: AsyncSession, message: str) -> None:
    """Flush, turning a unique-constraint violation into a 409 with `message`."""
    try:
        await session.flush()
    except IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) == "23505" or "unique" in str(exc.orig).lower():
            raise Conflict(message) from exc
        raise


def refuse_nulls(changes: dict[str, Any], *fields: str) -> None:
    """A partial update may leave these fields out, but may not set them to null."""
    for field in fields:
        if field in changes and changes[field] is None:
            raise InvalidInput("must not be null", field=field)


def apply_update(row: Any, changes: dict[str, Any]) -> None:
    for field, value in changes.items():
        setattr(row, field, value)
