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
import functools
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from database.evaluations.catalogue import FROM_TEST
from database.results.crud.case_columns import (
    SLICES,
    ByPosition,
    CaseSlices,
    PairedCase,
    PairedColumns,
    PairedRuns,
    RunCases,
    Side,
    SideColumns,
)
from database.results.crud.packed_columns import MetricPairs, MetricSide, packed
from database.results.models import Run
from utils.crud import local_settings

# (The column types are this module's answers: importable from here.)
__all__ = [
    "SLICES",
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
# What a case is and how it is sliced, per pinned version (matched by position in numpy: a
# planner misjudging the aggregates above would otherwise probe these row by row).
# A test has changed when what it sends or expects did, or the parameters it gives the runs'
# metrics (under the metadata keys they read, see catalogue.for_case): labels, tags and the
# rest of metadata (where recorded outputs live) do not count; with one version on both sides
# nothing changed.
# Each field's values come as one text (decoding 100,000s of array elements cost more than the
# query): per case 'v' and the value, its backslashes and separators escaped, or 'n' for none;
# separated by chr(31). Only the distinct values are decoded (_decoded).
_SEPARATOR = "\x1f"


def _marked(field: str) -> str:
    escaped = rf"""replace(replace("case" ->> '{field}', '\', '\\'), chr(31), '\s')"""
    return f"string_agg(coalesce('v' || {escaped}, 'n'), chr(31))"


_DIGESTED = ("input", "messages", "variables", "expected_output", "context")
_ARGUMENTS = 100  # at most, of a function in PostgreSQL (two runs' metrics may read 100 keys)


@functools.cache
def _version_cases_query(read_keys: int) -> TextClause:
    """The query, its digest taking metadata[:read_0], metadata[:read_1]... too."""
    digested = [f""""case" -> '{field}'""" for field in _DIGESTED] + [
        f""""case" -> 'metadata' -> CAST(:read_{i} AS text)""" for i in range(read_keys)
    ]
    array = " || ".join(
        f"jsonb_build_array({', '.join(digested[start : start + _ARGUMENTS])})"
        for start in range(0, len(digested), _ARGUMENTS)
    )
    return text(f"""
SELECT version_id, string_agg(int4send(position), ''), {", ".join(map(_marked, SLICES))},
       string_agg(CASE WHEN :digest THEN md5(({array})::text) END, chr(31)),
       count(*)
FROM test_set_version_cases WHERE version_id IN (:baseline_version, :candidate_version)
GROUP BY version_id
""")


def _metadata_read(*runs: Run) -> list[str]:
    """The metadata keys the runs' metrics (as each run froze them) read a test's parameters
    from, sorted."""
    keys = {
        metric.get("parameters", {}).get(FROM_TEST)
        for run in runs
        for metric in run.metrics or []
        if isinstance(metric.get("parameters"), dict)
    }
    return sorted(key for key in keys if isinstance(key, str))


def _decoded(marked: str) -> str | None:
    if marked == "n":
        return None
    return re.sub(r"\\(.)", lambda found: "\\" if found[1] == "\\" else _SEPARATOR, marked[1:])


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


@dataclass(frozen=True)
class _VersionCases:
    """One pinned version's cases, found by position."""

    index: np.ndarray  # position -> row, -1 where the version has no such position
    slices: dict[str, list[str]]  # each row's marked value (see _version_cases_query)
    digests: list[str]

    @property
    def size(self) -> int:
        return len(self.slices[SLICES[0]])

    @classmethod
    def of(cls, row: Sequence[Any] | None) -> _VersionCases:
        if row is None:
            return cls(np.full(0, -1, dtype=np.int64), {field: [] for field in SLICES}, [])
        positions = packed(row[1], ">i4").astype(np.int64)
        index = np.full(int(positions.max(initial=-1)) + 1, -1, dtype=np.int64)
        index[positions] = np.arange(len(positions))
        marked = zip(SLICES, row[2:5], strict=True)
        slices = {field: _split(found, row[-1]) for field, found in marked}
        return cls(index, slices, _split(row[5], row[-1]))

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """The row of each position (-1: none, or no position)."""
        found = np.full(len(positions), -1, dtype=np.int64)
        inside = (positions >= 0) & (positions < len(self.index))
        found[inside] = self.index[positions[inside]]
        return found


def _split(joined: str | None, count: int) -> list[str]:
    parts = joined.split(_SEPARATOR) if joined is not None else []
    assert len(parts) == count or not parts, "a value holds the separator"
    return parts


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
    slices, changed = await _version_cases(session, baseline, candidate, sides)
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


async def _version_cases(
    session: AsyncSession, baseline: Run, candidate: Run, sides: Sequence[SideColumns]
) -> tuple[CaseSlices, np.ndarray]:
    """Each case's slices (behavior, category, topic) and whether its test changed."""
    same = baseline.test_set_version_id == candidate.test_set_version_id
    read = _metadata_read(baseline, candidate) if not same else []
    rows = await session.execute(
        _version_cases_query(len(read)),
        {
            "baseline_version": baseline.test_set_version_id,
            "candidate_version": candidate.test_set_version_id,
            "digest": not same,
            **{f"read_{i}": key for i, key in enumerate(read)},
        },
    )
    versions = (baseline.test_set_version_id, candidate.test_set_version_id)
    return await asyncio.to_thread(_slices_and_changes, rows.all(), versions, sides)


def _slices_and_changes(
    rows: Sequence[Any], versions: tuple[uuid.UUID, uuid.UUID], sides: Sequence[SideColumns]
) -> tuple[CaseSlices, np.ndarray]:
    same = versions[0] == versions[1]
    found = {found[0]: _VersionCases.of(found) for found in rows}
    none = _VersionCases.of(None)
    before, after = found.get(versions[0], none), found.get(versions[1], none)
    rows_before, rows_after = before.rows(sides[0].position), after.rows(sides[1].position)
    # Each case's row among both versions' rows (the candidate's first; one version's rows
    # once): its values are the candidate's version's, else the baseline's, else none.
    at = np.where(rows_before >= 0, after.size + rows_before, -1) if before is not after else None
    at = np.where(rows_after >= 0, rows_after, -1 if at is None else at)
    values, codes = {}, {}
    for field in SLICES:
        marked = after.slices[field] + (before.slices[field] if before is not after else [])
        lookup = {value: code for code, value in enumerate(dict.fromkeys(marked))}
        row_codes = np.fromiter(map(lookup.__getitem__, marked), dtype=np.int64, count=len(marked))
        values[field] = [_decoded(value) for value in lookup]
        if "n" not in lookup:
            lookup["n"] = len(values[field])
            values[field].append(None)
        codes[field] = np.full(len(at), lookup["n"], dtype=np.int64)
        codes[field][at >= 0] = row_codes[at[at >= 0]]
    slices = CaseSlices(values, codes)
    changed = np.zeros(len(rows_after), dtype=bool)
    if not same:
        both = np.flatnonzero((rows_before >= 0) & (rows_after >= 0))
        changed[both] = [
            before.digests[rows_before[i]] != after.digests[rows_after[i]] for i in both
        ]
    return slices, changed


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
