"""Reading a published version's cases: a page for the API, the next ones for an export (by
their weight), those a run's chunk executes, and whether two versions hold the same tests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import any_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from database.test_sets.crud import text_bytes
from database.test_sets.models import TestSetVersionCase
from utils.crud import int_array, paginate


async def list_version_cases(
    session: AsyncSession, version_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[TestSetVersionCase], int]:
    query = (
        select(TestSetVersionCase)
        .where(TestSetVersionCase.version_id == version_id)
        .order_by(TestSetVersionCase.position)
    )
    return await paginate(session, query, limit=limit, offset=offset)


async def version_cases_after(
    session: AsyncSession, version_id: uuid.UUID, position: int, *, limit: int, max_bytes: int
) -> list[Any]:
    """The version's next cases after `position` (position and case), in order: at most
    `limit`, and none more once they weigh `max_bytes` as text (the first always comes)."""
    size, order = text_bytes(TestSetVersionCase.case), TestSetVersionCase.position
    page = (
        select(order, TestSetVersionCase.case, (func.sum(size).over(order_by=order) - size))
        .where(TestSetVersionCase.version_id == version_id, order > position)
        .order_by(order)
        .limit(limit)
        .subquery()
    )
    position_, case, before = page.c
    rows = await session.execute(
        select(position_.label("position"), case).where(before < max_bytes).order_by(position_)
    )
    return list(rows.all())


@dataclass(frozen=True, slots=True)
class VersionCase:
    """A case of a pinned version, as a run executes it (plain values: chunks read hundreds)."""

    position: int
    test_id: uuid.UUID | None
    case: dict[str, Any]


async def version_cases(
    session: AsyncSession, version_id: uuid.UUID, positions: Sequence[int]
) -> list[VersionCase]:
    """The version's cases at `positions`, in order."""
    rows = await session.execute(
        select(TestSetVersionCase.position, TestSetVersionCase.test_id, TestSetVersionCase.case)
        .where(
            TestSetVersionCase.version_id == version_id,
            TestSetVersionCase.position == any_(int_array("positions", positions)),
        )
        .order_by(TestSetVersionCase.position)
    )
    return [VersionCase(*row) for row in rows.all()]


async def same_tests(session: AsyncSession, version_id: uuid.UUID, other_id: uuid.UUID) -> bool:
    """Whether every case of `version_id` is of the test that `other_id` holds at its position
    (a case whose test was deleted is of none), compared in the database: a version may hold
    100,000 cases."""
    case, other = aliased(TestSetVersionCase), aliased(TestSetVersionCase)
    differing = (
        select(case.position)
        .outerjoin(other, (other.version_id == other_id) & (other.position == case.position))
        .where(
            case.version_id == version_id,
            or_(other.position.is_(None), other.test_id.is_distinct_from(case.test_id)),
        )
    )
    return not await session.scalar(select(differing.exists()))
