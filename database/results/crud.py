"""Queries of runs, their results and events, and the response cache. Flush, never commit."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Float,
    Table,
    TextClause,
    and_,
    any_,
    case,
    cast,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.models import TERMINAL, CachedResponse, Result, Run, RunEvent
from database.test_sets.models import TestSetVersionCase
from notifications.publisher import publish_after_commit
from utils import fastjson
from utils.crud import int_array, json_rows, paginate, recordset_insert


async def create_run(session: AsyncSession, run: Run) -> Run:
    session.add(run)
    await session.flush()
    return run


async def get_run(
    session: AsyncSession, run_id: uuid.UUID, *, for_update: bool = False
) -> Run | None:
    query = select(Run).where(Run.id == run_id).execution_options(populate_existing=True)
    if for_update:
        query = query.with_for_update()
    return await session.scalar(query)


async def lock_run(session: AsyncSession, run_id: uuid.UUID) -> str | None:
    """Takes the run's row lock (until commit) and returns its status."""
    return await session.scalar(select(Run.status).where(Run.id == run_id).with_for_update())


async def list_runs(
    session: AsyncSession,
    *,
    project_id: uuid.UUID | None,
    test_set_id: uuid.UUID | None,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Run], int]:
    query = select(Run).order_by(Run.created_at.desc(), Run.id.desc())
    for column, value in (
        (Run.project_id, project_id),
        (Run.test_set_id, test_set_id),
        (Run.status, status),
    ):
        if value is not None:
            query = query.where(column == value)
    return await paginate(session, query, limit=limit, offset=offset)


async def counts(
    session: AsyncSession, run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[int, int, int, int]]:
    """(done, passed, failed, errored) of each run."""
    rows = await session.execute(
        select(
            Result.run_id,
            func.count(),
            func.count().filter(Result.status == "passed"),
            func.count().filter(Result.status == "failed"),
            func.count().filter(Result.status == "errored"),
        )
        .where(Result.run_id.in_(run_ids))
        .group_by(Result.run_id)
    )
    found = {row[0]: (row[1], row[2], row[3], row[4]) for row in rows.all()}
    return {run_id: found.get(run_id, (0, 0, 0, 0)) for run_id in run_ids}


async def set_status(
    session: AsyncSession,
    run_id: uuid.UUID,
    status: str,
    *,
    error: str | None = None,
    only_from: Sequence[str] | None = None,
) -> bool:
    """Moves a run that is not yet finished (or is in one of `only_from`) to `status`; False
    when it was not."""
    values: dict[str, Any] = {"status": status}
    if status == "running":
        values["started_at"] = func.coalesce(Run.started_at, func.now())
    if status in TERMINAL:
        values["finished_at"] = func.now()
    if error is not None:
        values["error"] = error
    changed = await session.execute(
        update(Run)
        .where(
            Run.id == run_id,
            Run.status.in_(only_from) if only_from else Run.status.not_in(TERMINAL),
        )
        .values(**values)
        .returning(Run.id)
    )
    return changed.first() is not None


# --- cases and results ----------------------------------------------------------------------


async def done_keys(
    session: AsyncSession, run_id: uuid.UUID, positions: Sequence[int]
) -> set[tuple[int, int]]:
    rows = await session.execute(
        select(Result.position, Result.repetition).where(
            Result.run_id == run_id, Result.position == any_(int_array("positions", positions))
        )
    )
    return {(position, repetition) for position, repetition in rows.all()}


async def count_results(
    session: AsyncSession, run_id: uuid.UUID, positions: Sequence[int] | None = None
) -> int:
    """The run's results (those at `positions` only, when given)."""
    query = select(func.count()).where(Result.run_id == run_id)
    if positions is not None:
        query = query.where(Result.position == any_(int_array("positions", positions)))
    return await session.scalar(query) or 0


RESULTS: Table = Result.__table__  # type: ignore[assignment]
RESULT_COLUMNS = [c.key for c in RESULTS.columns if c.key != "created_at"]


@functools.cache
def _insert_results() -> TextClause:
    # Built on first use: foreign-key column types resolve once all tables are registered.
    return recordset_insert(
        RESULTS,
        RESULT_COLUMNS,
        "ON CONFLICT (run_id, position, repetition) DO NOTHING RETURNING id",
    )


async def insert_results(
    session: AsyncSession, results: Sequence[dict[str, Any]]
) -> set[uuid.UUID]:
    """Writes results, skipping any already written (resumed work); returns the ids of those
    actually inserted."""
    if not results:
        return set()
    inserted = await session.execute(_insert_results(), json_rows(results))
    return set(inserted.scalars().all())


async def list_results(
    session: AsyncSession, run_id: uuid.UUID, *, status: str | None, limit: int, offset: int
) -> tuple[list[Result], int]:
    query = (
        select(Result).where(Result.run_id == run_id).order_by(Result.position, Result.repetition)
    )
    if status is not None:
        query = query.where(Result.status == status)
    return await paginate(session, query, limit=limit, offset=offset)


async def all_results(session: AsyncSession, run_id: uuid.UUID) -> list[Result]:
    rows = await session.scalars(
        select(Result).where(Result.run_id == run_id).order_by(Result.position, Result.repetition)
    )
    return list(rows.all())


async def get_result(session: AsyncSession, result_id: uuid.UUID) -> Result | None:
    return await session.get(Result, result_id)


async def positions_to_rerun(session: AsyncSession, run_id: uuid.UUID) -> list[int]:
    rows = await session.scalars(
        select(Result.position)
        .where(Result.run_id == run_id, Result.status.in_(("failed", "errored")))
        .distinct()
        .order_by(Result.position)
    )
    return list(rows.all())


# --- summary --------------------------------------------------------------------------------


async def result_stats(session: AsyncSession, run_id: uuid.UUID) -> dict[str, Any]:
    row = (
        await session.execute(
            select(
                func.percentile_cont(0.5).within_group(Result.latency_ms),
                func.percentile_cont(0.95).within_group(Result.latency_ms),
                func.percentile_cont(0.99).within_group(Result.latency_ms),
                func.avg(Result.latency_ms),
                func.coalesce(func.sum(Result.input_tokens), 0),
                func.coalesce(func.sum(Result.output_tokens), 0),
                func.sum(Result.cost),
            ).where(Result.run_id == run_id, Result.status != "errored")
        )
    ).one()
    return {
        "p50": row[0],
        "p95": row[1],
        "p99": row[2],
        "mean": float(row[3]) if row[3] is not None else None,
        "input_tokens": int(row[4]),
        "output_tokens": int(row[5]),
        "cost": row[6],
    }


async def error_counts(session: AsyncSession, run_id: uuid.UUID) -> dict[str, int]:
    rows = await session.execute(
        select(func.coalesce(Result.error_type, "unknown"), func.count())
        .where(Result.run_id == run_id, Result.status == "errored")
        .group_by(Result.error_type)
    )
    return {kind: count for kind, count in rows.all()}


async def group_stats(
    session: AsyncSession, run: Run, field: str
) -> list[tuple[str | None, int, float | None]]:
    """(value, results, pass rate) grouped by a case field (behavior, category, topic)."""
    value = TestSetVersionCase.case[field].astext
    scored = Result.status != "errored"
    rows = await session.execute(
        select(
            value,
            func.count(),
            func.avg(cast(case((Result.status == "passed", 1), else_=0), Float)).filter(scored),
        )
        .select_from(Result)
        .join(
            TestSetVersionCase,
            and_(
                TestSetVersionCase.version_id == run.test_set_version_id,
                TestSetVersionCase.position == Result.position,
            ),
        )
        .where(Result.run_id == run.id)
        .group_by(value)
        .order_by(literal_column("2").desc())
    )
    return [(row[0], row[1], row[2]) for row in rows.all()]


# --- response cache -------------------------------------------------------------------------


async def cached_response(session: AsyncSession, key: str) -> CachedResponse | None:
    return await session.scalar(select(CachedResponse).where(CachedResponse.key == key))


async def store_response(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(
        insert(CachedResponse)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["organization_id", "key"])
    )


# --- run events -----------------------------------------------------------------------------

# `seq` values come from `runs.event_seq`, incremented by an UPDATE that holds the run's row
# lock until commit: two writers of one run take turns, so a run's events become visible in
# `seq` order and a reader that has seen seq N has seen everything before it.
_ALLOCATE = text(
    "UPDATE runs SET event_seq = event_seq + :count WHERE id = :run_id RETURNING event_seq"
)
_INSERT_EVENTS = text(
    "INSERT INTO run_events (run_id, seq, organization_id, type, data)"
    " SELECT :run_id, e.seq, :organization_id, e.type, e.data"
    " FROM jsonb_to_recordset(CAST(:events AS JSONB))"
    " AS e(seq BIGINT, type VARCHAR(32), data JSONB)"
)


async def record_events(
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    organization_id: uuid.UUID,
    events: Sequence[tuple[str, dict[str, Any]]],
) -> int:
    """Appends events to the run's log, in the transaction that makes the change; returns the
    last seq. The NOTIFY that wakes the streams follows the commit."""
    if not events:
        return 0
    last = (await session.execute(_ALLOCATE, {"count": len(events), "run_id": run_id})).scalar_one()
    first = last - len(events) + 1
    await session.execute(
        _INSERT_EVENTS,
        {
            "run_id": run_id,
            "organization_id": organization_id,
            "events": fastjson.dumps(
                [
                    {"seq": seq, "type": kind, "data": data}
                    for seq, (kind, data) in enumerate(events, start=first)
                ],
                default=str,
            ),
        },
    )
    publish_after_commit(session, run_id)
    return int(last)


async def events_after(
    session: AsyncSession, run_id: uuid.UUID, after: int, *, limit: int
) -> list[RunEvent]:
    """The run's stored events after seq `after`, in order (the streams' reader)."""
    rows = await session.scalars(
        select(RunEvent)
        .where(RunEvent.run_id == run_id, RunEvent.seq > after)
        .order_by(RunEvent.seq)
        .limit(limit)
    )
    return list(rows.all())
