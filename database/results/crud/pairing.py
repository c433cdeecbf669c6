"""Two runs' cases side by side, paired in SQL: per case (a test, whatever its position in
either pinned version), each run's repetitions aggregated next to the data, joined by test.

A case's *key* is its test id; a result whose test was deleted keys by its position when both
runs pinned the same version, and pairs with nothing otherwise."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.models import Run
from utils.crud import local_settings

_KEY = (
    "coalesce(r.test_id::text, CASE WHEN :same_version THEN 'position:' || r.position"
    " ELSE r.run_id::text || ':' || r.position END)"
)
# The same, of rows grouped by (run_id, position): a test has one position in a version, so
# grouping by the integer position (faster than by the text key) groups by case.
_GROUPED_KEY = _KEY.replace("r.test_id", "min(r.test_id::text)::uuid")

_CASES = text(f"""
WITH agg AS (
    SELECT r.run_id, {_GROUPED_KEY} AS key, min(r.test_id::text) AS test_id, r.position,
           count(*) FILTER (WHERE r.status <> 'errored') AS scored,
           count(*) FILTER (WHERE r.status = 'passed') AS passed,
           count(*) FILTER (WHERE r.status = 'errored') AS errored,
           avg(r.latency_ms) FILTER (WHERE r.status <> 'errored') AS latency,
           avg(r.cost) FILTER (WHERE r.status <> 'errored') AS cost,
           avg(coalesce(r.input_tokens, 0) + r.output_tokens)
               FILTER (WHERE r.status <> 'errored') AS tokens
    FROM results r WHERE r.run_id IN (:baseline, :candidate)
    GROUP BY r.run_id, r.position
), a AS (SELECT * FROM agg WHERE run_id = :baseline),
   b AS (SELECT * FROM agg WHERE run_id = :candidate)
SELECT coalesce(b.key, a.key), coalesce(b.test_id, a.test_id),
       a.scored, a.passed, a.errored, b.scored, b.passed, b.errored,
       a.latency, b.latency, a.cost, b.cost, a.tokens, b.tokens, a.position, b.position
FROM a FULL JOIN b ON a.key = b.key
ORDER BY coalesce(b.position, a.position), 1
""")
# What a case is and how it is sliced, per pinned version (joined by position in Python: a
# planner misjudging the aggregates above would otherwise probe these row by row).
# A test has changed when what it sends or expects did: labels, tags and metadata (where
# recorded outputs live) do not count.
_VERSION_CASES = text("""
SELECT version_id, position, "case" ->> 'behavior', "case" ->> 'category', "case" ->> 'topic',
       md5(jsonb_build_array("case" -> 'input', "case" -> 'messages', "case" -> 'variables',
                             "case" -> 'expected_output', "case" -> 'context')::text)
FROM test_set_version_cases WHERE version_id IN (:baseline_version, :candidate_version)
""")

# Per metric and run, one row of columns: the cases' keys, and for each its scored and passing
# evaluations, and mean score (arrays decode far faster than a row per case).
_METRICS = text(f"""
WITH per_case AS (
    SELECT r.run_id = :candidate AS is_candidate, {_GROUPED_KEY} AS key,
           e.metric_name, min(e.metric_type) AS metric_type,
           count(*) FILTER (WHERE e.error IS NULL) AS scored,
           count(*) FILTER (WHERE e.error IS NULL AND e.passed) AS passed,
           avg(e.score) FILTER (WHERE e.error IS NULL) AS score,
           coalesce(bool_and(e.score IN (0, 1)) FILTER (WHERE e.error IS NULL), true) AS is_binary
    FROM evaluations e JOIN results r ON r.id = e.result_id
    WHERE e.run_id IN (:baseline, :candidate) AND r.run_id IN (:baseline, :candidate)
    GROUP BY r.run_id, r.position, e.metric_name
)
SELECT is_candidate, metric_name, min(metric_type), array_agg(key), array_agg(scored),
       array_agg(passed), array_agg(score), bool_and(is_binary)
FROM per_case GROUP BY is_candidate, metric_name
""")

_FLIP_OUTPUTS = text(f"""
WITH wanted AS (
    SELECT * FROM unnest(CAST(:keys AS TEXT[]), CAST(:baseline_passes AS BOOLEAN[]))
        AS w(key, baseline_passes)
)
SELECT DISTINCT ON (r.run_id, w.key) r.run_id = :candidate, w.key, r.id, r.status,
       left(r.output, :chars), length(r.output) > :chars
FROM results r JOIN wanted w ON {_KEY} = w.key
WHERE r.run_id IN (:baseline, :candidate) AND r.status <> 'errored'
ORDER BY r.run_id, w.key,
         ((r.status = 'passed') = (w.baseline_passes = (r.run_id = :baseline))) DESC,
         r.repetition
""")

OUTPUT_CHARS = 4000


@asynccontextmanager
async def whole_run_plans(session: AsyncSession) -> AsyncIterator[None]:
    """For reads that take whole runs, in this transaction only: hash joins and sorts in
    memory. A run is often compared as it ends (its gate), before the planner has statistics
    of its fresh rows, and would otherwise be probed row by row (seconds, not milliseconds)."""
    async with local_settings(session, enable_nestloop="off", work_mem="64MB"):
        yield


@dataclass(frozen=True, slots=True)
class Side:
    """One run's repetitions of one case."""

    scored: int
    passed: int
    errored: int
    latency: float | None
    cost: float | None
    tokens: float | None

    @property
    def share(self) -> float | None:
        return self.passed / self.scored if self.scored else None


@dataclass(frozen=True, slots=True)
class PairedCase:
    key: str
    test_id: uuid.UUID | None
    baseline: Side | None
    candidate: Side | None
    behavior: str | None
    category: str | None
    topic: str | None
    changed: bool

    def share(self, side: str) -> float | None:
        """The share of passing repetitions on one side ("baseline" or "candidate")."""
        found: Side | None = getattr(self, side)
        return found.share if found is not None else None


@dataclass(frozen=True)
class MetricSide:
    """One metric's evaluations in one run, as columns over the cases it scored."""

    keys: list[str]
    scored: np.ndarray
    passed: np.ndarray
    score: np.ndarray  # NaN where nothing was scored
    binary: bool  # every score 0 or 1

    def column(self, order: dict[str, int], size: int, *, graded: bool) -> np.ndarray:
        """Per case (in `order`), its mean score (graded) or share of passing evaluations;
        NaN where the metric scored nothing."""
        values = np.full(size, np.nan)
        where = np.fromiter((order.get(key, -1) for key in self.keys), dtype=np.int64)
        found = (where >= 0) & (self.scored > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            own = self.score if graded else self.passed / self.scored
        values[where[found]] = own[found]
        return values


@dataclass
class MetricPairs:
    type: str | None
    baseline: MetricSide | None = None
    candidate: MetricSide | None = None


def _params(baseline: Run, candidate: Run) -> dict[str, Any]:
    return {
        "baseline": baseline.id,
        "candidate": candidate.id,
        "same_version": baseline.test_set_version_id == candidate.test_set_version_id,
    }


def _side(
    scored: int | None,
    passed: int,
    errored: int,
    latency: Any,
    cost: Any,
    tokens: Any,
) -> Side | None:
    if scored is None:  # the run has no result of this case
        return None
    return Side(
        scored=scored,
        passed=passed,
        errored=errored,
        latency=float(latency) if latency is not None else None,
        cost=float(cost) if cost is not None else None,
        tokens=float(tokens) if tokens is not None else None,
    )


async def paired_cases(session: AsyncSession, baseline: Run, candidate: Run) -> list[PairedCase]:
    rows = (await session.execute(_CASES, _params(baseline, candidate))).all()
    versions = await session.execute(
        _VERSION_CASES,
        {
            "baseline_version": baseline.test_set_version_id,
            "candidate_version": candidate.test_set_version_id,
        },
    )
    described = {(row[0], row[1]): row[2:] for row in versions.all()}
    cases = []
    for row in rows:
        before = described.get((baseline.test_set_version_id, row[14]))
        after = described.get((candidate.test_set_version_id, row[15]))
        behavior, category, topic, _ = after or before or (None, None, None, None)
        cases.append(
            PairedCase(
                key=row[0],
                test_id=uuid.UUID(row[1]) if row[1] else None,
                baseline=_side(row[2], row[3], row[4], row[8], row[10], row[12]),
                candidate=_side(row[5], row[6], row[7], row[9], row[11], row[13]),
                behavior=behavior,
                category=category,
                topic=topic,
                changed=before is not None and after is not None and before[3] != after[3],
            )
        )
    return cases


async def paired_metrics(
    session: AsyncSession, baseline: Run, candidate: Run
) -> dict[str, MetricPairs]:
    """Per metric name, each run's evaluations of its cases (by key)."""
    rows = await session.execute(_METRICS, _params(baseline, candidate))
    metrics: dict[str, MetricPairs] = {}
    for is_candidate, name, kind, keys, scored, passed, score, binary in rows.all():
        side = MetricSide(
            keys=list(keys),
            scored=np.array(scored, dtype=float),
            passed=np.array(passed, dtype=float),
            score=np.array(score, dtype=float),  # (None becomes NaN)
            binary=bool(binary),
        )
        pairs = metrics.setdefault(name, MetricPairs(type=kind))
        if is_candidate:
            pairs.candidate = side
        else:
            pairs.baseline = side
    return metrics


@dataclass(frozen=True, slots=True)
class Output:
    result_id: uuid.UUID
    status: str
    output: str | None
    truncated: bool


async def flip_outputs(
    session: AsyncSession, baseline: Run, candidate: Run, flips: Sequence[tuple[str, bool]]
) -> dict[tuple[str, bool], Output]:
    """For each (key, baseline passes) flip, one result per side showing its outcome: a passing
    repetition on the side that passes, a failing one on the other. Keyed (key, is candidate)."""
    if not flips:
        return {}
    rows = await session.execute(
        _FLIP_OUTPUTS,
        {
            **_params(baseline, candidate),
            "keys": [key for key, _ in flips],
            "baseline_passes": [passes for _, passes in flips],
            "chars": OUTPUT_CHARS,
        },
    )
    return {
        (key, bool(is_candidate)): Output(result_id, status, output, bool(truncated))
        for is_candidate, key, result_id, status, output, truncated in rows.all()
    }
