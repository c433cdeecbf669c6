"""Queries of runs, their results and events, and the response cache. Flush, never commit.

Every query of the entity is here: the summaries' (`figures`), the comparisons' pairing of two
runs (`pairing`) and what a rescore reads of its source (`rescore_sources`) in modules of
their own, imported where they are used."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    Row,
    Table,
    TextClause,
    any_,
    func,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from database.evaluations.models import Evaluation
from database.results.models import TERMINAL, Result, Run, RunCounts, RunEvent
from notifications.publisher import publish_after_commit
from utils.crud import (
    int_array,
    json_row_groups,
    local_settings,
    paginate,
    recordset_insert,
)
from utils.storable import storable_document


async def create_run(session: AsyncSession, run: Run) -> Run:
    session.add(run)
    await session.flush()
    return run


async def get_run(
    session: AsyncSession, run_id: uuid.UUID, *, for_update: bool = False, for_share: bool = False
) -> Run | None:
    query = select(Run).where(Run.id == run_id).execution_options(populate_existing=True)
    if for_update or for_share:
        query = query.with_for_update(read=not for_update)
    return await session.scalar(query)


async def present_runs(session: AsyncSession, run_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Of the runs, those that still exist (the live streams' check for deleted ones)."""
    return set((await session.scalars(select(Run.id).where(Run.id.in_(run_ids)))).all())


class Locked(NamedTuple):
    status: str
    spent: float
    total: int
    max_cost: float | None


async def lock_run(session: AsyncSession, run_id: uuid.UUID) -> Locked | None:
    """Takes the run's row lock (until commit) and returns its status, what it has spent, its
    total and its budget as they stand (a repeat raises the total and budget of a run a late
    chunk may still hold as it loaded it)."""
    row = (
        await session.execute(
            select(Run.status, Run.spent, Run.total, Run.max_cost)
            .where(Run.id == run_id)
            .with_for_update()
        )
    ).first()
    return None if row is None else Locked(*row)


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
    """(done, passed, failed, errored) of each run: its results, as the triggers on `results`
    count them."""
    rows = await session.execute(
        select(
            RunCounts.run_id, RunCounts.done, RunCounts.passed, RunCounts.failed, RunCounts.errored
        ).where(RunCounts.run_id.in_(run_ids))
    )
    found = {row[0]: (row[1], row[2], row[3], row[4]) for row in rows.all()}
    return {run_id: found.get(run_id, (0, 0, 0, 0)) for run_id in run_ids}


# --- cases and results ----------------------------------------------------------------------


async def done_keys(
    session: AsyncSession, run_id: uuid.UUID, positions: Sequence[int]
) -> set[tuple[int, int]]:
    """The (position, repetition) of the run's results at `positions`."""
    # Asked for in the order of the run's (position, repetition) index, which no other plan
    # gives without a sort: while the statistics do not know the run's rows yet, the planner
    # would otherwise read every result of the organization (its row-level security index) for
    # each chunk, and a run's time would grow with the square of its cases.
    async with local_settings(session, enable_sort="off"):
        rows = await session.execute(
            select(Result.position, Result.repetition)
            .where(
                Result.run_id == run_id, Result.position == any_(int_array("positions", positions))
            )
            .order_by(Result.position, Result.repetition)
        )
        return {(position, repetition) for position, repetition in rows.all()}


async def count_results(
    session: AsyncSession,
    run_id: uuid.UUID,
    positions: Sequence[int] | None = None,
    repetitions: range | None = None,
) -> int:
    """The run's results (at `positions` and `repetitions` only, when given)."""
    if positions is None:  # kept by the triggers: no count of the run
        if repetitions is not None:
            raise ValueError("repetitions are counted at given positions only")
        done = await session.scalar(select(RunCounts.done).where(RunCounts.run_id == run_id))
        return done or 0
    keys = await done_keys(session, run_id, positions)
    return sum(1 for _, repetition in keys if repetitions is None or repetition in repetitions)


RESULTS: Table = Result.__table__  # type: ignore[assignment]
RESULT_COLUMNS = [c.key for c in RESULTS.columns if c.key not in ("created_at", "text_bytes")]
_TEXT_BYTES = (
    "coalesce(octet_length(output), 0) + coalesce(octet_length(error_message), 0)"
    " + coalesce(octet_length(input::text), 0) + coalesce(octet_length(trajectory::text), 0)"
)


@functools.cache
def _insert_results() -> TextClause:
    # Built on first use: foreign-key column types resolve once all tables are registered.
    return recordset_insert(
        RESULTS,
        RESULT_COLUMNS,
        "ON CONFLICT (run_id, position, repetition) DO NOTHING RETURNING id",
        computed={"text_bytes": _TEXT_BYTES},
    )


async def insert_results(
    session: AsyncSession, results: Sequence[dict[str, Any]]
) -> set[uuid.UUID]:
    """Writes results, skipping any already written (resumed work); returns the ids of those
    actually inserted."""
    if not results:
        return set()
    inserted: set[uuid.UUID] = set()
    for group in json_row_groups(results):
        inserted.update((await session.execute(_insert_results(), group)).scalars().all())
    return inserted


async def known_results(session: AsyncSession, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Of these result ids, those written."""
    return set((await session.scalars(select(Result.id).where(Result.id.in_(ids)))).all())


async def result_totals(session: AsyncSession, run_id: uuid.UUID) -> tuple[int, int, int, float]:
    """(results, failed, errored, summed latency in ms) of the run."""
    row = (
        await session.execute(
            select(
                func.count(),
                func.count().filter(Result.status == "failed"),
                func.count().filter(Result.status == "errored"),
                func.sum(Result.latency_ms),
            ).where(Result.run_id == run_id)
        )
    ).one()
    return row[0], row[1], row[2], float(row[3] or 0.0)


async def metric_names(session: AsyncSession, run: Run) -> list[str]:
    """The metrics the run plans and those its evaluations name, in Python's order (not the
    collation's): a running run's export has a column for a metric nothing has scored yet."""
    rows = await session.scalars(
        select(Evaluation.metric_name).where(Evaluation.run_id == run.id).distinct()
    )
    return sorted({spec["name"] for spec in run.metrics or []} | set(rows.all()))


async def result_row(session: AsyncSession, result_id: uuid.UUID) -> Row[Any] | None:
    """A result as a row of its columns (as a page of them is read)."""
    found = await session.execute(select(RESULTS).where(Result.id == result_id))
    return found.first()


async def positions_to_rerun(session: AsyncSession, run_id: uuid.UUID) -> list[int]:
    rows = await session.scalars(
        select(Result.position)
        .where(Result.run_id == run_id, Result.status.in_(("failed", "errored")))
        .distinct()
        .order_by(Result.position)
    )
    return list(rows.all())


# --- run events -----------------------------------------------------------------------------

# `seq` values come from `runs.event_seq`, incremented by an UPDATE that holds the run's row
# lock until commit: two writers of one run take turns, so a run's events become visible in
# `seq` order and a reader that has seen seq N has seen everything before it.
#
# A transaction updates the run's row at most once (`update_run`). PostgreSQL re-checks a row's
# foreign keys when a transaction updates a row version it made itself, so a second UPDATE
# would need a key-share lock on the run's model (and test set version, prompt version...),
# which a DELETE of that model holds while its SET NULL waits for the run's row: a deadlock.
_ADVANCE = text(
    "UPDATE runs SET event_seq = event_seq + :count, spent = spent + :cost"
    " WHERE id = :run_id RETURNING event_seq, spent"
)
_INSERT_EVENTS = text(
    "INSERT INTO run_events (run_id, seq, organization_id, type, data)"
    " SELECT :run_id, e.seq, :organization_id, e.type, e.data"
    " FROM jsonb_to_recordset(CAST(:events AS JSONB))"
    " AS e(seq BIGINT, type VARCHAR(32), data JSONB)"
)

Events = Sequence[tuple[str, dict[str, Any]]]


async def update_run(
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    organization_id: uuid.UUID,
    events: Events,
    spent: float = 0.0,
    status: str | None = None,
    error: str | None = None,
    gate_result: dict[str, Any] | None = None,
    only_from: Sequence[str] | None = None,
) -> tuple[int, float] | None:
    """The transaction's one UPDATE of the run's row: the events' seqs, what was spent and,
    with `status`, the move of a run not yet ended (or in one of `only_from`) to it; then the
    events, appended to the run's log (the NOTIFY that wakes the streams follows the commit).
    Returns (last seq, spent), or None when the status was not moved (nothing written)."""
    if status is None:
        statement: Any = _ADVANCE
        parameters: dict[str, Any] | None = {"count": len(events), "cost": spent, "run_id": run_id}
    else:
        values: dict[str, Any] = {"status": status, "event_seq": Run.event_seq + len(events)}
        if spent:
            values["spent"] = Run.spent + spent
        if status == "running":
            values["started_at"] = func.coalesce(Run.started_at, func.now())
        if status in TERMINAL:
            values["finished_at"] = func.now()
        if error is not None:
            values["error"] = error
        if gate_result is not None:
            values["gate_result"] = gate_result
        statement, parameters = (
            (
                update(Run)
                .where(
                    Run.id == run_id,
                    Run.status.in_(only_from) if only_from else Run.status.not_in(TERMINAL),
                )
                .values(**values)
                .returning(Run.event_seq, Run.spent)
            ),
            None,
        )
    row = (await session.execute(statement, parameters)).first()
    if row is None:
        return None
    last, first = int(row[0]), int(row[0]) - len(events) + 1
    if events:
        rows = [
            {"seq": seq, "type": kind, "data": data}
            for seq, (kind, data) in enumerate(events, first)
        ]
        await session.execute(
            _INSERT_EVENTS,
            {
                "run_id": run_id,
                "organization_id": organization_id,
                "events": storable_document(rows),
            },
        )
        publish_after_commit(session, run_id, ended=status in TERMINAL)
    return last, float(row[1])


async def record_events(
    session: AsyncSession, *, run_id: uuid.UUID, organization_id: uuid.UUID, events: Events
) -> int:
    """Appends events to the run's log, in the transaction that makes the change (its one
    update of the run's row: see `update_run`); returns the last seq."""
    if not events:
        return 0
    found = await update_run(session, run_id=run_id, organization_id=organization_id, events=events)
    assert found is not None
    return found[0]


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


async def result_positions(session: AsyncSession, run_id: uuid.UUID) -> list[int]:
    rows = await session.scalars(
        select(Result.position).where(Result.run_id == run_id).distinct().order_by(Result.position)
    )
    return list(rows.all())


async def reopen(
    session: AsyncSession,
    run_id: uuid.UUID,
    *,
    repetitions: int,
    total: int,
    max_cost: float | None,
) -> None:
    """An ended run takes more work: queued again, its end and gate result cleared."""
    await session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(
            status="queued",
            repetitions=repetitions,
            total=total,
            max_cost=max_cost,
            finished_at=None,
            error=None,
            gate_result=None,
        )
    )
