"""The results that show a compare's flips: for each case whose outcome flipped, one result
per side (a passing repetition on the side that passes, a failing one on the other).

Within one run a case is one position, and the pairing knows each case's position in either
run, so a side's results are read by `run_id = :run AND position = ANY(:positions)`: the
prefix of the unique `(run_id, position, repetition)` index, with no join for the planner to
turn round. Whatever plan it picks, a side's read handles at most that run's rows once; a
lookup by key, joined to the wanted keys, could walk both runs once per flip when the runs were
newer than the planner's statistics."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.models import Run

OUTPUT_CHARS = 4000


def _side(run: str) -> str:
    """One run's wanted cases, a result each: the repetition with the wanted outcome first."""
    return f"""(
    SELECT DISTINCT ON (r.position) {run == "candidate"}, r.position, r.id, r.status,
           left(r.output, :chars), length(left(r.output, :chars + 1)) > :chars
    FROM results r
    WHERE r.run_id = :{run} AND r.position = ANY(CAST(:{run}_positions AS INT[]))
      AND r.status <> 'errored'
    ORDER BY r.position,
             ((r.status = 'passed') = (r.position = ANY(CAST(:{run}_passing AS INT[])))) DESC,
             r.repetition)"""


_FLIP_OUTPUTS = text(f"{_side('baseline')} UNION ALL {_side('candidate')}")


@dataclass(frozen=True, slots=True)
class Flipped:
    """A case whose outcome flipped: its key (pairing's _KEY), whether the baseline passes,
    and its position in each run (None: the run has no result of it)."""

    key: str
    baseline_passes: bool
    baseline_position: int | None
    candidate_position: int | None


@dataclass(frozen=True, slots=True)
class Output:
    result_id: uuid.UUID
    status: str
    output: str | None
    truncated: bool


async def flip_outputs(
    session: AsyncSession, baseline: Run, candidate: Run, flips: Sequence[Flipped]
) -> dict[tuple[str, bool], Output]:
    """For each flip, one result per side showing its outcome: a passing repetition on the
    side that passes, a failing one on the other. Keyed (key, is candidate)."""
    if not flips:
        return {}
    sides = {False: "baseline", True: "candidate"}
    keys: dict[tuple[bool, int], str] = {}
    params: dict[str, object] = {"baseline": baseline.id, "candidate": candidate.id}
    for is_candidate, run in sides.items():
        positions, passing = [], []
        for flip in flips:
            position = flip.candidate_position if is_candidate else flip.baseline_position
            if position is None:
                continue
            keys[is_candidate, position] = flip.key
            positions.append(position)
            if flip.baseline_passes != is_candidate:  # this side passes
                passing.append(position)
        params[f"{run}_positions"], params[f"{run}_passing"] = positions, passing
    rows = await session.execute(_FLIP_OUTPUTS, {**params, "chars": OUTPUT_CHARS})
    return {
        (keys[bool(is_candidate), position], bool(is_candidate)): Output(
            result_id, status, output, bool(truncated)
        )
        for is_candidate, position, result_id, status, output, truncated in rows.all()
    }
