"""Two runs' cases side by side, read back as columns (one array per figure: a row per case
would cost seconds at 100,000 cases). Two runs of one version, the common case, pair by
position: each run's rows are read once, as packed columns, and aggregated per case in numpy
(case_columns.RunCases), with no join and no text key. Any other two runs (or two whose
positions do not name the same tests) pair in SQL: per case (a test, whatever its position in
either pinned version), each run's repetitions aggregated next to the data, joined by test.

A case's *key* is its test id; a result whose test was deleted keys by its position when both
runs pinned the same version, and pairs with nothing otherwise. Within one run a case is one
position, so a run's per-case figures (its metrics') are matched to the cases by position."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.crud.case_columns import (
    ByPosition,
    CaseSlices,
    PairedCase,
    PairedColumns,
    PairedRuns,
    RunCases,
    Side,
    SideColumns,
)
from database.results.crud.packed_columns import MetricPairs, MetricSide
from database.results.crud.pinned_versions import slices_and_changes
from database.results.models import Run
from utils.crud import local_settings

# (The column types are this module's answers: importable from here.)
__all__ = [
    "CaseSlices",
    "MetricPairs",
    "MetricSide",
    "PairedCase",
    "PairedColumns",
    "PairedRuns",
    "Side",
    "SideColumns",
    "paired_cases",
    "paired_metrics",
    "paired_runs",
    "run_params",
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
# Per metric and run, its evaluations as packed columns (see case_columns.RunCases): the case
# (position) of each, its flags (2: an error, 1: passed, 0: failed) and score; aggregated per
# case in numpy.
_METRICS = text("""
SELECT e.run_id = :candidate, e.metric_name, min(e.metric_type),
       string_agg(int4send(e.position), ''),
       string_agg(int2send(CAST(CASE WHEN e.error IS NOT NULL THEN 2 WHEN e.passed THEN 1
                                     ELSE 0 END AS int2)), ''),
       string_agg(float8send(e.score), '')
FROM evaluations e WHERE e.run_id IN (:baseline, :candidate)
GROUP BY e.run_id, e.metric_name
""")


def _packed_rows(run: str) -> str:
    """One run's results as packed columns, in the order of its unique index (position, then
    repetition): a case's rows together, its repetitions summed in order."""
    order = "ORDER BY r.position, r.repetition"
    flags = (
        "CASE r.status WHEN 'passed' THEN 1 WHEN 'errored' THEN 2 ELSE 0 END"
        " + (r.latency_ms IS NULL)::int * 4 + (r.cost IS NULL)::int * 8"
        " + (r.output_tokens IS NULL)::int * 16 + (r.test_id IS NULL)::int * 32"
    )
    return f"""
    SELECT {run == "candidate"}, string_agg(int4send(r.position), '' {order}),
           string_agg(int2send(CAST({flags} AS int2)), '' {order}),
           string_agg(float8send(coalesce(r.latency_ms, 0)), '' {order}),
           string_agg(float8send(coalesce(r.cost, 0)), '' {order}),
           string_agg(int8send(coalesce(r.input_tokens, 0)::int8
                               + coalesce(r.output_tokens, 0)), '' {order}),
           string_agg(coalesce(uuid_send(r.test_id), decode(repeat('00', 16), 'hex')),
                      '' {order})
    FROM results r WHERE r.run_id = :{run}"""


_RUN_ROWS = text(f"{_packed_rows('baseline')} UNION ALL {_packed_rows('candidate')}")


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


def run_params(baseline: Run, candidate: Run) -> dict[str, Any]:
    return {
        "baseline": baseline.id,
        "candidate": candidate.id,
        "same_version": baseline.test_set_version_id == candidate.test_set_version_id,
    }


async def paired_runs(session: AsyncSession, baseline: Run, candidate: Run) -> PairedRuns:
    """Two runs of one version (the common case) are paired by position, from their rows read
    once and aggregated in numpy; others, or any whose positions do not name the same tests,
    by key, in SQL."""
    same = baseline.test_set_version_id == candidate.test_set_version_id
    found = await _by_position(session, baseline, candidate) if same else None
    paired = found if found is not None else await _by_key(session, baseline, candidate)
    return PairedRuns(paired, paired.baseline, paired.candidate, same_version=same)


async def paired_cases(
    session: AsyncSession, baseline: Run, candidate: Run, runs: PairedRuns | None = None
) -> PairedColumns:
    """The runs paired (`runs`, when already read), with their versions' cases: each case's
    slices, and whether its test changed between the versions."""
    if runs is None:
        runs = await paired_runs(session, baseline, candidate)
    sides = (runs.baseline, runs.candidate)
    slices, changed = await slices_and_changes(session, baseline, candidate, sides)
    return PairedColumns(runs.ids, runs.baseline, runs.candidate, slices, changed)


async def _by_position(session: AsyncSession, baseline: Run, candidate: Run) -> ByPosition | None:
    rows = (await session.execute(_RUN_ROWS, run_params(baseline, candidate))).all()
    return await asyncio.to_thread(_paired_by_position, rows)


def _paired_by_position(rows: Sequence[Any]) -> ByPosition | None:
    runs = {bool(row[0]): RunCases.of(row[1:]) for row in rows}
    return ByPosition.pair(runs[False], runs[True])


@dataclass(frozen=True)
class _ByKey:
    keys_: list[str]
    test_ids_: list[str | None]
    baseline: SideColumns
    candidate: SideColumns

    def __len__(self) -> int:
        return len(self.keys_)

    def keys(self, which: np.ndarray) -> list[str]:
        return [self.keys_[i] for i in which.tolist()]

    def test_ids(self, which: np.ndarray) -> list[uuid.UUID | None]:
        found = [self.test_ids_[i] for i in which.tolist()]
        return [uuid.UUID(test) if test else None for test in found]


async def _by_key(session: AsyncSession, baseline: Run, candidate: Run) -> _ByKey:
    async with _sorted_groups(session):
        row = (await session.execute(_CASES, run_params(baseline, candidate))).one()
    return await asyncio.to_thread(_paired_by_key, row)


def _paired_by_key(row: Any) -> _ByKey:
    width = len(_SIDE_COLUMNS)
    empty: list[Any] = []
    sides = [
        SideColumns.of([column or empty for column in row[start : start + width]])
        for start in (2, 2 + width)
    ]
    return _ByKey(list(row[0] or []), list(row[1] or []), sides[0], sides[1])


async def paired_metrics(
    session: AsyncSession, baseline: Run, candidate: Run
) -> dict[str, MetricPairs]:
    """Per metric name, each run's evaluations of its cases (by the run's position)."""
    # Hashed into its few groups: a planner without statistics of fresh rows would sort every
    # evaluation (400,000 for two runs of 100,000 results and 2 metrics) to group them.
    async with local_settings(session, enable_sort="off"):
        rows = (await session.execute(_METRICS, run_params(baseline, candidate))).all()
    return await asyncio.to_thread(_metric_pairs, rows)


def _metric_pairs(rows: Sequence[Any]) -> dict[str, MetricPairs]:
    metrics: dict[str, MetricPairs] = {}
    for is_candidate, name, kind, positions, flags, scores in rows:
        side = MetricSide.of(positions, flags, scores)
        pairs = metrics.setdefault(name, MetricPairs(type=kind))
        if is_candidate:
            pairs.candidate = side
        else:
            pairs.baseline = side
    return metrics
