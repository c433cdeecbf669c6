"""Two runs' cases side by side, paired in SQL: per case (a test, whatever its position in
either pinned version), each run's repetitions aggregated next to the data, joined by test, and
read back as columns (one array per figure: a row per case would cost seconds at 100,000 cases).

A case's *key* is its test id; a result whose test was deleted keys by its position when both
runs pinned the same version, and pairs with nothing otherwise. Within one run a case is one
position, so a run's per-case figures (its metrics') are matched to the cases by position."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.crud.case_columns import (
    MetricPairs,
    MetricSide,
    PairedCase,
    PairedColumns,
    Side,
    SideColumns,
    floats,
)
from database.results.models import Run
from utils.crud import local_settings

# (The column types are this module's answers: importable from here.)
__all__ = [
    "OUTPUT_CHARS",
    "MetricPairs",
    "MetricSide",
    "Output",
    "PairedCase",
    "PairedColumns",
    "Side",
    "SideColumns",
    "flip_outputs",
    "paired_cases",
    "paired_metrics",
    "whole_run_plans",
]

_KEY = (
    "coalesce(r.test_id::text, CASE WHEN :same_version THEN 'position:' || r.position"
    " ELSE r.run_id::text || ':' || r.position END)"
)
# The same, of rows grouped by (run_id, position): a test has one position in a version, so
# grouping by the integer position (faster than by the text key) groups by case.
_GROUPED_KEY = _KEY.replace("r.test_id", "min(r.test_id::text)::uuid")

# Each side's figures, in the order the statistics resample the cases: by position (the
# candidate's first), then key.
_SIDE_COLUMNS = ("scored", "passed", "errored", "latency", "cost", "tokens", "position")


def _side(run: str) -> str:
    """One run's cases: its repetitions aggregated per position."""
    return f"""
    SELECT {_GROUPED_KEY} AS key, min(r.test_id::text) AS test_id, r.position,
           count(*) FILTER (WHERE r.status <> 'errored') AS scored,
           count(*) FILTER (WHERE r.status = 'passed') AS passed,
           count(*) FILTER (WHERE r.status = 'errored') AS errored,
           avg(r.latency_ms) FILTER (WHERE r.status <> 'errored') AS latency,
           avg(r.cost) FILTER (WHERE r.status <> 'errored') AS cost,
           (avg(coalesce(r.input_tokens, 0) + r.output_tokens)
               FILTER (WHERE r.status <> 'errored'))::float8 AS tokens
    FROM results r WHERE r.run_id = :{run} GROUP BY r.run_id, r.position"""


_CASES = text(f"""
WITH a AS ({_side("baseline")}), b AS ({_side("candidate")}),
paired AS (
    SELECT coalesce(b.key, a.key) AS key, coalesce(b.test_id, a.test_id) AS test_id,
           {", ".join(f"a.{c} AS a_{c}, b.{c} AS b_{c}" for c in _SIDE_COLUMNS)},
           coalesce(b.position, a.position) AS at
    FROM a FULL JOIN b ON a.key = b.key
)
SELECT array_agg(key ORDER BY at, key), array_agg(test_id ORDER BY at, key),
       {", ".join(f"array_agg(a_{c} ORDER BY at, key)" for c in _SIDE_COLUMNS)},
       {", ".join(f"array_agg(b_{c} ORDER BY at, key)" for c in _SIDE_COLUMNS)}
FROM paired
""")
# What a case is and how it is sliced, per pinned version (matched by position in numpy: a
# planner misjudging the aggregates above would otherwise probe these row by row).
# A test has changed when what it sends or expects did: labels, tags and metadata (where
# recorded outputs live) do not count; with one version on both sides nothing changed.
_VERSION_CASES = text("""
SELECT version_id, array_agg(position), array_agg("case" ->> 'behavior'),
       array_agg("case" ->> 'category'), array_agg("case" ->> 'topic'),
       array_agg(CASE WHEN :digest THEN md5(jsonb_build_array(
           "case" -> 'input', "case" -> 'messages', "case" -> 'variables',
           "case" -> 'expected_output', "case" -> 'context')::text) END)
FROM test_set_version_cases WHERE version_id IN (:baseline_version, :candidate_version)
GROUP BY version_id
""")

# Per metric and run, one row of columns: the cases' positions, and for each its scored and
# passing evaluations, and mean score.
_METRICS = text("""
WITH per_case AS (
    SELECT r.run_id = :candidate AS is_candidate, r.position,
           e.metric_name, min(e.metric_type) AS metric_type,
           count(*) FILTER (WHERE e.error IS NULL) AS scored,
           count(*) FILTER (WHERE e.error IS NULL AND e.passed) AS passed,
           avg(e.score) FILTER (WHERE e.error IS NULL) AS score,
           coalesce(bool_and(e.score IN (0, 1)) FILTER (WHERE e.error IS NULL), true) AS is_binary
    FROM evaluations e JOIN results r ON r.id = e.result_id
    WHERE e.run_id IN (:baseline, :candidate) AND r.run_id IN (:baseline, :candidate)
    GROUP BY r.run_id, r.position, e.metric_name
)
SELECT is_candidate, metric_name, min(metric_type), array_agg(position), array_agg(scored),
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
async def _sorted_groups(session: AsyncSession) -> AsyncIterator[None]:
    """Per-case groups aggregated in order (a run's rows come sorted by position from its
    unique index) rather than hashed: hashing 100,000s of small groups costs two to three
    times as much here, measured on runs of 100,000 results."""
    async with local_settings(session, enable_hashagg="off"):
        yield


@asynccontextmanager
async def whole_run_plans(session: AsyncSession) -> AsyncIterator[None]:
    """For reads that take whole runs, in this transaction only: hash joins and sorts in
    memory. A run is often compared as it ends (its gate), before the planner has statistics
    of its fresh rows, and would otherwise be probed row by row (seconds, not milliseconds)."""
    async with local_settings(session, enable_nestloop="off", work_mem="64MB"):
        yield


def _params(baseline: Run, candidate: Run) -> dict[str, Any]:
    return {
        "baseline": baseline.id,
        "candidate": candidate.id,
        "same_version": baseline.test_set_version_id == candidate.test_set_version_id,
    }


@dataclass(frozen=True)
class _VersionCases:
    """One pinned version's cases, found by position."""

    index: np.ndarray  # position -> row, -1 where the version has no such position
    slices: dict[str, list[str | None]]
    digests: list[str | None]

    @classmethod
    def of(cls, row: Sequence[Any] | None) -> _VersionCases:
        if row is None:
            return cls(np.full(0, -1, dtype=np.int64), {field: [] for field in SLICES}, [])
        positions = np.array(row[1], dtype=np.int64)
        index = np.full(int(positions.max(initial=-1)) + 1, -1, dtype=np.int64)
        index[positions] = np.arange(len(positions))
        return cls(index, dict(zip(SLICES, row[2:5], strict=True)), list(row[5]))

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """The row of each position (-1: none, or no position)."""
        found = np.full(len(positions), -1, dtype=np.int64)
        inside = (positions >= 0) & (positions < len(self.index))
        found[inside] = self.index[positions[inside]]
        return found


SLICES = ("behavior", "category", "topic")


async def paired_cases(session: AsyncSession, baseline: Run, candidate: Run) -> PairedColumns:
    async with _sorted_groups(session):
        row = (await session.execute(_CASES, _params(baseline, candidate))).one()
    keys, test_ids = row[0] or [], row[1] or []
    width = len(_SIDE_COLUMNS)
    empty: list[Any] = []
    sides = [
        SideColumns.of([column or empty for column in row[start : start + width]])
        for start in (2, 2 + width)
    ]
    same = baseline.test_set_version_id == candidate.test_set_version_id
    versions = await session.execute(
        _VERSION_CASES,
        {
            "baseline_version": baseline.test_set_version_id,
            "candidate_version": candidate.test_set_version_id,
            "digest": not same,
        },
    )
    found = {found[0]: found for found in versions.all()}
    before = _VersionCases.of(found.get(baseline.test_set_version_id))
    after = _VersionCases.of(found.get(candidate.test_set_version_id))
    rows_before, rows_after = before.rows(sides[0].position), after.rows(sides[1].position)
    slices: dict[str, list[str | None]] = {}
    for field in SLICES:
        own, other = after.slices[field], before.slices[field]
        slices[field] = [
            own[a] if a >= 0 else (other[b] if b >= 0 else None)
            for a, b in zip(rows_after.tolist(), rows_before.tolist(), strict=True)
        ]
    changed = np.zeros(len(keys), dtype=bool)
    if not same:
        both = np.flatnonzero((rows_before >= 0) & (rows_after >= 0))
        changed[both] = [
            before.digests[rows_before[i]] != after.digests[rows_after[i]] for i in both
        ]
    return PairedColumns(
        keys=list(keys),
        test_ids=list(test_ids),
        baseline=sides[0],
        candidate=sides[1],
        slices=slices,
        changed=changed,
    )


async def paired_metrics(
    session: AsyncSession, baseline: Run, candidate: Run
) -> dict[str, MetricPairs]:
    """Per metric name, each run's evaluations of its cases (by the run's position)."""
    async with _sorted_groups(session):
        rows = (await session.execute(_METRICS, _params(baseline, candidate))).all()
    metrics: dict[str, MetricPairs] = {}
    for is_candidate, name, kind, positions, scored, passed, score, binary in rows:
        side = MetricSide(
            positions=np.array(positions, dtype=np.int64),
            scored=floats(scored),
            passed=floats(passed),
            score=floats(score),
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
