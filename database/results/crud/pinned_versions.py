"""What two runs' pinned versions say of their cases: each case's slices (behavior, category,
topic), kept with each version as codes by position, and whether its test changed between the
versions, from digests of the versions' cases. Both are matched to the paired cases by
position in numpy (a planner misjudging the runs' aggregates would otherwise probe the
versions' cases row by row)."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from database.evaluations.catalogue import FROM_TEST
from database.results.crud.case_columns import CaseSlices, SideColumns
from database.results.crud.packed_columns import packed
from database.results.models import Run
from database.test_sets import crud as test_set_crud
from database.test_sets.slice_index import SLICES, VersionSlices
from database.tests.agent_fields import AGENT_FIELDS

# Two versions' digests of their cases. A test has changed when what it sends or expects did
# (an agent's expected calls, its tools' answers and its steps included), or the parameters it
# gives the runs' metrics (under the metadata keys they read, see
# catalogue.for_case): labels, tags and the rest of metadata (where recorded outputs live) do
# not count; with one version on both sides nothing changed.
_DIGESTED = ("input", "messages", "variables", "expected_output", "context", *AGENT_FIELDS)
_ARGUMENTS = 100  # at most, of a function in PostgreSQL (two runs' metrics may read 100 keys)
_SEPARATOR = "\x1f"


@functools.cache
def _digests_query(read_keys: int) -> TextClause:
    """The query, its digest taking metadata[:read_0], metadata[:read_1]... too."""
    digested = [f""""case" -> '{field}'""" for field in _DIGESTED] + [
        f""""case" -> 'metadata' -> CAST(:read_{i} AS text)""" for i in range(read_keys)
    ]
    array = " || ".join(
        f"jsonb_build_array({', '.join(digested[start : start + _ARGUMENTS])})"
        for start in range(0, len(digested), _ARGUMENTS)
    )
    return text(f"""
SELECT version_id, string_agg(int4send(position), ''), string_agg(md5(({array})::text), chr(31))
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


def _at(by_position: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """by_position's entry at each position (-1: beyond it, or no position)."""
    found = np.full(len(positions), -1, dtype=np.int64)
    inside = (positions >= 0) & (positions < len(by_position))
    found[inside] = by_position[positions[inside]]
    return found


@dataclass(frozen=True)
class _Digests:
    """One pinned version's digests of its cases, found by position."""

    index: np.ndarray  # position -> row, -1 where the version has no such position
    digests: list[str]

    @classmethod
    def of(cls, row: Sequence[Any] | None) -> _Digests:
        if row is None:
            return cls(np.full(0, -1, dtype=np.int64), [])
        positions = packed(row[1], ">i4").astype(np.int64)
        index = np.full(int(positions.max(initial=-1)) + 1, -1, dtype=np.int64)
        index[positions] = np.arange(len(positions))
        digests = row[2].split(_SEPARATOR) if row[2] is not None else []
        if len(digests) != len(positions):
            raise ValueError(f"{len(digests)} digests of {len(positions)} cases")
        return cls(index, digests)


async def slices_and_changes(
    session: AsyncSession, baseline: Run, candidate: Run, sides: Sequence[SideColumns]
) -> tuple[CaseSlices, np.ndarray]:
    """Each paired case's slices and whether its test changed (`sides`: the runs' columns)."""
    versions = (baseline.test_set_version_id, candidate.test_set_version_id)
    slices = await test_set_crud.version_slices(session, set(versions))
    digests: Sequence[Any] = []
    if versions[0] != versions[1]:
        read = _metadata_read(baseline, candidate)
        params: dict[str, Any] = {f"read_{i}": key for i, key in enumerate(read)}
        params |= {"baseline_version": versions[0], "candidate_version": versions[1]}
        digests = (await session.execute(_digests_query(len(read)), params)).all()
    found = await asyncio.to_thread(_slices, slices, versions, sides)
    changed = await asyncio.to_thread(_changed, digests, versions, sides)
    return found, changed


def _slices(
    read: dict[uuid.UUID, VersionSlices],
    versions: tuple[uuid.UUID, uuid.UUID],
    sides: Sequence[SideColumns],
) -> CaseSlices:
    """A case's values are its candidate's version's, else its baseline's, else none."""
    values: dict[str, list[str | None]] = {}
    codes: dict[str, np.ndarray] = {}
    for field in SLICES:
        lookup: dict[str | None, int] = {}
        found = np.full(len(sides[1].position), -1, dtype=np.int64)
        for version, side in ((versions[1], sides[1]), (versions[0], sides[0])):
            if version not in read:
                continue
            version_values = read[version].values[field]
            # The version's codes as indices among both versions' values.
            renamed = np.fromiter(
                (lookup.setdefault(value, len(lookup)) for value in version_values),
                dtype=np.int64,
                count=len(version_values),
            )
            code = _at(read[version].codes[field], side.position)
            unset = (found < 0) & (code >= 0)
            found[unset] = renamed[code[unset]]
        found[found < 0] = lookup.setdefault(None, len(lookup))
        values[field], codes[field] = list(lookup), found
    return CaseSlices(values, codes)


def _changed(
    rows: Sequence[Any], versions: tuple[uuid.UUID, uuid.UUID], sides: Sequence[SideColumns]
) -> np.ndarray:
    changed = np.zeros(len(sides[1].position), dtype=bool)
    if versions[0] == versions[1]:
        return changed
    found = {row[0]: _Digests.of(row) for row in rows}
    before, after = (
        found.get(versions[0], _Digests.of(None)),
        found.get(versions[1], _Digests.of(None)),
    )
    rows_before, rows_after = (
        _at(before.index, sides[0].position),
        _at(after.index, sides[1].position),
    )
    both = np.flatnonzero((rows_before >= 0) & (rows_after >= 0))
    changed[both] = [before.digests[rows_before[i]] != after.digests[rows_after[i]] for i in both]
    return changed
