"""What a rescore reads of its source run: the source held still, the sizes of the results it
had written by then, and those results, whole, a window at a time."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import any_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.crud import get_run
from database.results.crud.pages import stored_size
from database.results.models import Result, Run
from utils.crud import custom_plans, int_array


async def source_sizes(
    session: AsyncSession,
    run_id: uuid.UUID,
    positions: Sequence[int],
    repetitions: range,
    *,
    written_by: datetime,
) -> dict[tuple[int, int], int]:
    """A run's results at `positions` and `repetitions` written by `written_by` (a result's
    `created_at` is its transaction's start), by key: what reading each one's texts costs
    (pages.stored_size), read without them. A rescore made then scores these, which its total
    counted: a source resumed since has more."""
    async with custom_plans(session):  # `positions` may be a whole run's (a rescore's making)
        rows = await session.execute(
            select(Result.position, Result.repetition, stored_size()).where(
                Result.run_id == run_id,
                Result.position == any_(int_array("positions", positions)),
                Result.repetition.between(repetitions.start, repetitions.stop - 1),
                Result.created_at <= written_by,
            )
        )
    return {(position, repetition): size for position, repetition, size in rows.all()}


async def hold_source(session: AsyncSession, run_id: uuid.UUID) -> tuple[Run, datetime] | None:
    """A run whose outputs are to be rescored, its row locked until commit (no result of it
    lands meanwhile: see lock_run), and the database's clock once it is held: the results it
    had written by then are what a rescore made now scores (see source_sizes)."""
    run = await get_run(session, run_id, for_update=True)
    if run is None:
        return None
    return run, (await session.execute(select(func.clock_timestamp()))).scalar_one()


async def source_results(
    session: AsyncSession, run_id: uuid.UUID, keys: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], Result]:
    """A run's results of these (position, repetition) keys, whole."""
    wanted = select(
        func.unnest(int_array("positions", [position for position, _ in keys])).label("position"),
        func.unnest(int_array("repetitions", [repetition for _, repetition in keys])).label(
            "repetition"
        ),
    ).subquery()
    rows = await session.scalars(
        select(Result)
        .join(
            wanted,
            (Result.position == wanted.c.position) & (Result.repetition == wanted.c.repetition),
        )
        .where(Result.run_id == run_id)
    )
    return {(r.position, r.repetition): r for r in rows.all()}
