"""The queries that summarise a run, next to the data. One definition of a pass rate holds for
all of them (schemas.PASS_RATE): each case's share of passing repetitions, errored ones left
out, averaged over the cases."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.crud.pairing import whole_run_plans
from database.results.models import Result, Run

# Per case (position) of one run: scored and passing repetitions, errored ones.
_CASES = """
    SELECT position, min(test_id::text) AS test_id,
           count(*) FILTER (WHERE status <> 'errored') AS scored,
           count(*) FILTER (WHERE status = 'passed') AS passed,
           count(*) FILTER (WHERE status = 'errored') AS errored
    FROM results WHERE run_id = :run_id GROUP BY position
"""
_PASS_RATE = text(f"""
WITH cases AS ({_CASES})
SELECT avg(passed::float / scored) FILTER (WHERE scored > 0), sum(errored), sum(scored + errored)
FROM cases
""")
# The three slices in one pass over the cases (GROUPING SETS), each field's groups apart.
_SLICES = text(f"""
WITH cases AS ({_CASES}), sliced AS (
    SELECT c.*, v.case ->> 'behavior' AS behavior, v.case ->> 'category' AS category,
           v.case ->> 'topic' AS topic
    FROM cases c
    JOIN test_set_version_cases v ON v.version_id = :version_id AND v.position = c.position
)
SELECT CASE WHEN GROUPING(behavior) = 0 THEN 'behavior'
            WHEN GROUPING(category) = 0 THEN 'category' ELSE 'topic' END,
       coalesce(behavior, category, topic), sum(scored + errored), sum(errored),
       avg(passed::float / scored) FILTER (WHERE scored > 0)
FROM sliced GROUP BY GROUPING SETS ((behavior), (category), (topic))
ORDER BY 1, 3 DESC, 2
""")
_METRICS = text("""
WITH cases AS (
    SELECT e.metric_name, e.metric_type, r.position,
           count(*) FILTER (WHERE e.error IS NULL) AS scored,
           count(*) FILTER (WHERE e.error IS NULL AND e.passed) AS passed,
           sum(e.score) FILTER (WHERE e.error IS NULL) AS score,
           count(*) FILTER (WHERE e.error IS NOT NULL) AS errored,
           sum(e.cost) AS cost
    FROM evaluations e JOIN results r ON r.id = e.result_id
    WHERE e.run_id = :run_id AND r.run_id = :run_id GROUP BY 1, 2, 3
)
SELECT metric_name, metric_type, avg(score / scored) FILTER (WHERE scored > 0),
       avg(passed::float / scored) FILTER (WHERE scored > 0), sum(scored), sum(errored), sum(cost)
FROM cases GROUP BY 1, 2 ORDER BY 1
""")
_CASE_ROWS = text(f"{_CASES} ORDER BY position")


@dataclass(frozen=True, slots=True)
class CaseTally:
    position: int
    test_id: uuid.UUID | None
    scored: int
    passed: int
    errored: int


@dataclass(frozen=True, slots=True)
class MetricFigures:
    name: str
    type: str
    mean_score: float | None
    pass_rate: float | None
    evaluated: int
    errored: int
    cost: float | None


async def pass_rate(session: AsyncSession, run_id: uuid.UUID) -> tuple[float | None, int, int]:
    """The run's pass rate, its errored results and all its results."""
    rate, errored, results = (await session.execute(_PASS_RATE, {"run_id": run_id})).one()
    return rate, int(errored or 0), int(results or 0)


async def slices(
    session: AsyncSession, run: Run
) -> dict[str, list[tuple[str | None, int, int, float | None]]]:
    """`groups` of every case field (behavior, category, topic) at once."""
    found: dict[str, list[tuple[str | None, int, int, float | None]]] = {
        field: [] for field in ("behavior", "category", "topic")
    }
    async with whole_run_plans(session):
        rows = await session.execute(
            _SLICES, {"run_id": run.id, "version_id": run.test_set_version_id}
        )
    for field, value, n, errored, rate in rows.all():
        found[field].append((value, int(n), int(errored), rate))
    return found


async def metrics(session: AsyncSession, run_id: uuid.UUID) -> list[MetricFigures]:
    async with whole_run_plans(session):
        rows = await session.execute(_METRICS, {"run_id": run_id})
    return [
        MetricFigures(name, kind, score, rate, int(n or 0), int(errored or 0), cost)
        for name, kind, score, rate, n, errored, cost in rows.all()
    ]


async def has_repetitions(session: AsyncSession, run_id: uuid.UUID) -> bool:
    """Whether any result of the run is a repetition past the first (else no case has more
    than one result: the key is unique)."""
    found = await session.scalar(
        select(Result.id).where(Result.run_id == run_id, Result.repetition > 0).limit(1)
    )
    return found is not None


async def case_tallies(session: AsyncSession, run_id: uuid.UUID) -> list[CaseTally]:
    rows = await session.execute(_CASE_ROWS, {"run_id": run_id})
    return [
        CaseTally(position, uuid.UUID(test_id) if test_id else None, scored, passed, errored)
        for position, test_id, scored, passed, errored in rows.all()
    ]


async def result_figures(session: AsyncSession, run_id: uuid.UUID) -> dict[str, Any]:
    """Latency percentiles and mean, tokens and cost of the target, errored results left out."""
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
