"""The results that show a compare's flips: for each case whose outcome flipped, one result
per side (a passing repetition on the side that passes, a failing one on the other), found by
the case's key (pairing's _KEY) through the results' indexes rather than by building every
result's key."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.crud.pairing import run_params
from database.results.models import Run

# A flip's results found by key through the indexes: by test, or (a result whose test was
# deleted) by position, in both runs of one version or in the run its key names.
_FLIP_OUTPUTS = text("""
WITH wanted AS (
    SELECT * FROM unnest(CAST(:keys AS TEXT[]), CAST(:baseline_passes AS BOOLEAN[]),
                         CAST(:test_ids AS UUID[]), CAST(:runs AS UUID[]),
                         CAST(:positions AS INT[]))
        AS w(key, baseline_passes, test_id, run_id, position)
)
SELECT DISTINCT ON (r.run_id, w.key) r.run_id = :candidate, w.key, r.id, r.status,
       left(r.output, :chars), length(r.output) > :chars
FROM wanted w CROSS JOIN LATERAL (
    SELECT r.run_id, r.id, r.status, r.output, r.repetition FROM results r
    WHERE r.run_id IN (:baseline, :candidate) AND r.test_id = w.test_id
    UNION ALL
    SELECT r.run_id, r.id, r.status, r.output, r.repetition FROM results r
    WHERE r.run_id IN (:baseline, :candidate) AND r.position = w.position
      AND r.test_id IS NULL AND r.run_id = coalesce(w.run_id, r.run_id)
) r
WHERE r.status <> 'errored'
ORDER BY r.run_id, w.key,
         ((r.status = 'passed') = (w.baseline_passes = (r.run_id = :baseline))) DESC,
         r.repetition
""")

OUTPUT_CHARS = 4000


def _key_parts(
    key: str, *, same_version: bool
) -> tuple[uuid.UUID | None, uuid.UUID | None, int | None]:
    """What a key (_KEY) names: (its test, None, None); or, for a result whose test was
    deleted, (None, its run or None for either run, its position); (None, None, None): none."""
    if ":" not in key:
        return uuid.UUID(key), None, None
    prefix, position = key.rsplit(":", 1)
    if prefix == "position":
        return (None, None, int(position)) if same_version else (None, None, None)
    return (None, uuid.UUID(prefix), int(position)) if not same_version else (None, None, None)


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
    params = run_params(baseline, candidate)
    found = [_key_parts(key, same_version=params["same_version"]) for key, _ in flips]
    rows = await session.execute(
        _FLIP_OUTPUTS,
        {
            **params,
            "keys": [key for key, _ in flips],
            "baseline_passes": [passes for _, passes in flips],
            "test_ids": [test_id for test_id, _, _ in found],
            "runs": [run for _, run, _ in found],
            "positions": [position for _, _, position in found],
            "chars": OUTPUT_CHARS,
        },
    )
    return {
        (key, bool(is_candidate)): Output(result_id, status, output, bool(truncated))
        for is_candidate, key, result_id, status, output, truncated in rows.all()
    }
