"""Queries of runs, results, evaluations and the response cache. Flush, never commit."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ARRAY,
    BindParameter,
    Float,
    Integer,
    Table,
    TextClause,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.models import TERMINAL, CachedResponse, Evaluation, Result, Run
from database.test_sets.models import TestSetVersion, TestSetVersionCase
from utils import fastjson
from utils.crud import paginate


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


async def run_status(session: AsyncSession, run_id: uuid.UUID) -> str | None:
    return await session.scalar(select(Run.status).where(Run.id == run_id))


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


async def version_numbers(
    session: AsyncSession, version_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    rows = await session.execute(
        select(TestSetVersion.id, TestSetVersion.number).where(TestSetVersion.id.in_(version_ids))
    )
    return {version_id: number for version_id, number in rows.all()}


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


def _int_array(values: Sequence[int]) -> BindParameter[Any]:
    # One array parameter, not an IN list of thousands: one prepared statement for any size.
    return bindparam("positions", list(values), type_=ARRAY(Integer()))


@dataclass(frozen=True, slots=True)
class VersionCase:
    """A case of a pinned version, as a run executes it (plain values: chunks read hundreds)."""

    position: int
    test_id: uuid.UUID | None
    case: dict[str, Any]


async def version_cases(
    session: AsyncSession, version_id: uuid.UUID, positions: Sequence[int]
) -> list[VersionCase]:
    rows = await session.execute(
        select(TestSetVersionCase.position, TestSetVersionCase.test_id, TestSetVersionCase.case)
        .where(
            TestSetVersionCase.version_id == version_id,
            TestSetVersionCase.position == any_(_int_array(positions)),
        )
        .order_by(TestSetVersionCase.position)
    )
    return [VersionCase(*row) for row in rows.all()]


async def done_keys(
    session: AsyncSession, run_id: uuid.UUID, positions: Sequence[int]
) -> set[tuple[int, int]]:
    rows = await session.execute(
        select(Result.position, Result.repetition).where(
            Result.run_id == run_id, Result.position == any_(_int_array(positions))
        )
    )
    return {(position, repetition) for position, repetition in rows.all()}


async def count_results(
    session: AsyncSession, run_id: uuid.UUID, positions: Sequence[int] | None = None
) -> int:
    """The run's results (those at `positions` only, when given)."""
    query = select(func.count()).where(Result.run_id == run_id)
    if positions is not None:
        query = query.where(Result.position == any_(_int_array(positions)))
    return await session.scalar(query) or 0


RESULTS: Table = Result.__table__  # type: ignore[assignment]
EVALUATIONS: Table = Evaluation.__table__  # type: ignore[assignment]
RESULT_COLUMNS = [c.key for c in RESULTS.columns if c.key != "created_at"]
EVALUATION_COLUMNS = [c.key for c in EVALUATIONS.columns]


def _recordset_insert(table: Table, columns: list[str], suffix: str = "") -> TextClause:
    """INSERT ... SELECT FROM jsonb_to_recordset(one JSON array of the rows): a whole batch is
    one statement with one parameter, prepared once. Encoding a batch as one JSON document is
    a single C call here, and PostgreSQL unpacks it on its own core, where per-column arrays
    cost this process about a tenth of its time in a run."""
    dialect = postgresql.dialect()
    names = ", ".join(columns)
    types = ", ".join(f"{name} {table.c[name].type.compile(dialect=dialect)}" for name in columns)
    return text(
        f"INSERT INTO {table.name} ({names}) SELECT {names}"
        f" FROM jsonb_to_recordset(CAST(:rows AS JSONB)) AS r({types}) {suffix}"
    )


@functools.cache
def _insert_statements() -> tuple[TextClause, TextClause]:
    # Built on first use: foreign-key column types resolve once all tables are registered.
    return (
        _recordset_insert(
            RESULTS,
            RESULT_COLUMNS,
            "ON CONFLICT (run_id, position, repetition) DO NOTHING RETURNING id",
        ),
        _recordset_insert(EVALUATIONS, EVALUATION_COLUMNS),
    )


def _rows(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The batch as the statement's one parameter (keys that are not columns are ignored,
    and a missing one is NULL)."""
    return {"rows": fastjson.dumps(rows, default=str)}


async def insert_results(
    session: AsyncSession,
    results: Sequence[dict[str, Any]],
    evaluations: Sequence[Sequence[dict[str, Any]]],
) -> list[uuid.UUID]:
    """Writes results (skipping any already written: resumed work) and their evaluations.

    Returns the ids of the results actually inserted.
    """
    if not results:
        return []
    insert_results_sql, insert_evaluations_sql = _insert_statements()
    inserted = await session.execute(insert_results_sql, _rows(results))
    new_ids = set(inserted.scalars().all())
    evaluation_rows = [
        {**evaluation, "result_id": result["id"]}
        for result, rows in zip(results, evaluations, strict=True)
        if result["id"] in new_ids
        for evaluation in rows
    ]
    if evaluation_rows:
        await session.execute(insert_evaluations_sql, _rows(evaluation_rows))
    return [result["id"] for result in results if result["id"] in new_ids]


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


async def evaluations_of(
    session: AsyncSession, result_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Evaluation]]:
    rows = await session.scalars(
        select(Evaluation)
        .where(Evaluation.result_id.in_(result_ids))
        .order_by(Evaluation.metric_name)
    )
    grouped: dict[uuid.UUID, list[Evaluation]] = {i: [] for i in result_ids}
    for evaluation in rows.all():
        grouped[evaluation.result_id].append(evaluation)
    return grouped


async def run_evaluations(
    session: AsyncSession, run_id: uuid.UUID
) -> dict[uuid.UUID, list[Evaluation]]:
    """Every evaluation of a run, by result (one query, whatever the run's size)."""
    rows = await session.scalars(
        select(Evaluation).where(Evaluation.run_id == run_id).order_by(Evaluation.metric_name)
    )
    grouped: dict[uuid.UUID, list[Evaluation]] = {}
    for evaluation in rows.all():
        grouped.setdefault(evaluation.result_id, []).append(evaluation)
    return grouped


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


async def metric_stats(
    session: AsyncSession, run_id: uuid.UUID
) -> list[tuple[str, str, float | None, float | None, int, float | None]]:
    """(name, type, mean score, pass rate, evaluated, judge cost) per metric."""
    scored = Evaluation.error.is_(None)
    rows = await session.execute(
        select(
            Evaluation.metric_name,
            Evaluation.metric_type,
            func.avg(Evaluation.score).filter(scored),
            func.avg(cast(case((Evaluation.passed, 1), else_=0), Float)).filter(scored),
            func.count().filter(scored),
            func.sum(Evaluation.cost),
        )
        .where(Evaluation.run_id == run_id)
        .group_by(Evaluation.metric_name, Evaluation.metric_type)
        .order_by(Evaluation.metric_name)
    )
    return [tuple(row) for row in rows.all()]


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
