"""The queries that summarise a run, next to the data. One definition of a pass rate holds for
all of them (schemas.PASS_RATE): each case's share of passing repetitions, errored ones left
out, averaged over the cases."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import TextClause, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.crud.pairing import whole_run_plans
from database.results.models import Result, Run

# What a result counts as, toward its case's figures.
_SCORED, _PASSED, _ERRORED = "status <> 'errored'", "status = 'passed'", "status = 'errored'"
# Per case (position) of one run: scored and passing repetitions, errored ones.
_CASES = f"""
    SELECT position, min(test_id::text) AS test_id,
           count(*) FILTER (WHERE {_SCORED}) AS scored,
           count(*) FILTER (WHERE {_PASSED}) AS passed,
           count(*) FILTER (WHERE {_ERRORED}) AS errored
    FROM results WHERE run_id = :run_id GROUP BY position
"""
# The same of a run whose every case has one result: each result is its case, and its rows
# need no grouping (hashing 100,000 groups cost as much as the rest of the query).
_SINGLE_CASES = f"""
    SELECT position, test_id::text AS test_id, ({_SCORED})::int AS scored,
           ({_PASSED})::int AS passed, ({_ERRORED})::int AS errored
    FROM results WHERE run_id = :run_id
"""
_PASS_RATE = """
WITH cases AS ({cases})
SELECT avg(passed::float / scored) FILTER (WHERE scored > 0), sum(errored), sum(scored + errored)
FROM cases
"""
# The three slices in one pass over the cases (GROUPING SETS), each field's groups apart.
_SLICES = """
WITH cases AS ({cases}), sliced AS (
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
"""
# Per metric and case: its scored, passing and errored evaluations, their scores and cost.
_METRIC_SCORED, _METRIC_PASSED = "e.error IS NULL", "e.error IS NULL AND e.passed"
_METRIC_CASES = f"""
    SELECT e.metric_name, e.metric_type, e.position,
           count(*) FILTER (WHERE {_METRIC_SCORED}) AS scored,
           count(*) FILTER (WHERE {_METRIC_PASSED}) AS passed,
           sum(e.score) FILTER (WHERE {_METRIC_SCORED}) AS score,
           count(*) FILTER (WHERE NOT ({_METRIC_SCORED})) AS errored,
           sum(e.cost) AS cost
    FROM evaluations e WHERE e.run_id = :run_id GROUP BY 1, 2, 3
"""
_METRICS = """
WITH cases AS ({cases})
SELECT metric_name, metric_type, avg(score / scored) FILTER (WHERE scored > 0),
       avg(passed::float / scored) FILTER (WHERE scored > 0), sum(scored), sum(errored), sum(cost)
FROM cases GROUP BY 1, 2 ORDER BY 1
"""
# The same of a run whose every case has one result: each evaluation is its case's, so the
# cases' averages are the evaluations' own, read with no grouping by case.
_SINGLE_METRICS = f"""
SELECT e.metric_name, e.metric_type, avg(e.score) FILTER (WHERE {_METRIC_SCORED}),
       avg(({_METRIC_PASSED})::int::float) FILTER (WHERE {_METRIC_SCORED}),
       count(*) FILTER (WHERE {_METRIC_SCORED}), count(*) FILTER (WHERE NOT ({_METRIC_SCORED})),
       sum(e.cost)
FROM evaluations e WHERE e.run_id = :run_id GROUP BY 1, 2 ORDER BY 1
"""


def _by_shape(query: str, cases: str, single_cases: str) -> dict[bool, TextClause]:
    """The query over a run's cases, keyed by whether each case has one result."""
    return {False: text(query.format(cases=cases)), True: text(query.format(cases=single_cases))}


# The pass rate were every errored repetition a failure: the least the errors could hide.
_RATE_IF_ERRORS_FAILED = """
WITH cases AS ({cases})
SELECT avg(passed::float / (scored + errored)) FILTER (WHERE scored + errored > 0) FROM cases
"""
# One metric's pass rate were every error it met a failure, case by case as the pass rate
# is: its own errored evaluations and its cases' errored results (which it never scored). A
# case it scored no repetition of, where some repetition did not err, is one it does not
# apply to; a case whose every repetition erred may be one it does, and is counted.
_METRIC_RATE_IF_ERRORS_FAILED = text("""
WITH scored AS (
    SELECT position, count(*) FILTER (WHERE error IS NULL AND passed) AS passed,
           count(*) FILTER (WHERE error IS NOT NULL) AS erred, count(*) AS tried
    FROM evaluations WHERE run_id = :run_id AND metric_name = :metric_name GROUP BY position
), errored AS (
    SELECT position, count(*) FILTER (WHERE status = 'errored') AS errored,
           bool_and(status = 'errored') AS wholly
    FROM results WHERE run_id = :run_id GROUP BY position
), cases AS (
    SELECT coalesce(s.passed, 0) AS passed, coalesce(s.tried, 0) + e.errored AS n,
           coalesce(s.erred, 0) + e.errored AS errors
    FROM errored e LEFT JOIN scored s USING (position)
    WHERE s.position IS NOT NULL OR e.wholly
)
SELECT avg(passed::float / n) FILTER (WHERE n > 0), coalesce(sum(errors), 0) FROM cases
""")
_PASS_RATES = _by_shape(_PASS_RATE, _CASES, _SINGLE_CASES)
_RATES_IF_ERRORS_FAILED = _by_shape(_RATE_IF_ERRORS_FAILED, _CASES, _SINGLE_CASES)
_SLICE_QUERIES = _by_shape(_SLICES, _CASES, _SINGLE_CASES)
_METRIC_QUERIES = {False: text(_METRICS.format(cases=_METRIC_CASES)), True: text(_SINGLE_METRICS)}
_CASE_ROWS = text(f"{_CASES} ORDER BY position")
# A page of the cases, and how many there are (of the flaky or steady ones, if asked): counted
# and cut in the database, not by reading every case of a run of 100,000 into a list.
_FLAKY = "CAST(:flaky AS boolean) IS NULL OR (passed > 0 AND passed < scored) = :flaky"
_CASE_PAGES = _by_shape(
    f"""
WITH cases AS ({{cases}})
SELECT position, test_id, scored, passed, errored, count(*) OVER () AS total
FROM cases WHERE {_FLAKY} ORDER BY position LIMIT :limit OFFSET :offset
""",
    _CASES,
    _SINGLE_CASES,
)
_CASE_COUNTS = _by_shape(
    f"WITH cases AS ({{cases}}) SELECT count(*) FROM cases WHERE {_FLAKY}", _CASES, _SINGLE_CASES
)


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


def one_per_case(run: Run) -> bool:
    """Whether each of the run's cases has one result: it asks for one repetition (every
    result's repetition is below the run's `repetitions`, which more repetitions raise first)."""
    return run.repetitions <= 1


async def pass_rate(session: AsyncSession, run: Run) -> tuple[float | None, int, int]:
    """The run's pass rate, its errored results and all its results."""
    query = _PASS_RATES[one_per_case(run)]
    rate, errored, results = (await session.execute(query, {"run_id": run.id})).one()
    return rate, int(errored or 0), int(results or 0)


async def pass_rate_if_errors_failed(session: AsyncSession, run: Run) -> float | None:
    """The run's pass rate with each errored repetition counted as a failure."""
    query = _RATES_IF_ERRORS_FAILED[one_per_case(run)]
    rate: float | None = await session.scalar(query, {"run_id": run.id})
    return rate


async def metric_pass_rate_if_errors_failed(
    session: AsyncSession, run: Run, metric_name: str
) -> tuple[float | None, int]:
    """The metric's pass rate with each error it met (its own, or its case's result's)
    counted as a failure, and how many errors that counted."""
    rate, errors = (
        await session.execute(
            _METRIC_RATE_IF_ERRORS_FAILED, {"run_id": run.id, "metric_name": metric_name}
        )
    ).one()
    return rate, int(errors)


async def slices(
    session: AsyncSession, run: Run
) -> dict[str, list[tuple[str | None, int, int, float | None]]]:
    """`groups` of every case field (behavior, category, topic) at once."""
    found: dict[str, list[tuple[str | None, int, int, float | None]]] = {
        field: [] for field in ("behavior", "category", "topic")
    }
    async with whole_run_plans(session):
        rows = await session.execute(
            _SLICE_QUERIES[one_per_case(run)],
            {"run_id": run.id, "version_id": run.test_set_version_id},
        )
    for field, value, n, errored, rate in rows.all():
        found[field].append((value, int(n), int(errored), rate))
    return found


async def metrics(session: AsyncSession, run: Run) -> list[MetricFigures]:
    async with whole_run_plans(session):
        rows = await session.execute(_METRIC_QUERIES[one_per_case(run)], {"run_id": run.id})
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


async def case_page(
    session: AsyncSession, run: Run, *, flaky: bool | None, limit: int, offset: int
) -> tuple[list[CaseTally], int]:
    """The run's cases from `offset` by position, at most `limit` (only the flaky ones, or only
    the steady ones, as `flaky` says), and how many there are in all."""
    shape = one_per_case(run)
    asked = {"run_id": run.id, "flaky": flaky, "limit": limit, "offset": offset}
    rows = (await session.execute(_CASE_PAGES[shape], asked)).all()
    if rows:
        total = int(rows[0].total)
    elif offset == 0:
        total = 0
    else:  # past the last page: no row to carry the count
        total = int(await session.scalar(_CASE_COUNTS[shape], asked) or 0)
    tallies = [
        CaseTally(row.position, uuid.UUID(row.test_id) if row.test_id else None, *row[2:5])
        for row in rows
    ]
    return tallies, total


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
