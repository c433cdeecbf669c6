"""What the engine records as it runs a run's chunks: the start, each batch of results (and
what they cost against the run's budget), each chunk's close, and the end.

A transaction updates the run's row once (see crud.update_run): a flush's steps, results,
progress, spending and, when the flush ends the run, its end are written by one UPDATE."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.core import on_commit
from database.evaluations import crud as evaluation_crud
from database.results import crud, events
from database.results.gates import end_run
from database.results.models import TERMINAL, Run
from utils.metrics import metrics

Batch = Sequence[tuple[dict[str, Any], list[dict[str, Any]]]]


async def start_chunk(session: AsyncSession, run: Run) -> None:
    """A chunk starts: the first one marks a queued run running."""
    if run.status == "queued":
        await events.record(
            session, run, [events.started(run)], status="running", only_from=("queued",)
        )


def spending(batch: Batch) -> float:
    """What a batch cost: the target's calls and every judge's."""
    return sum(
        _paid(result) + sum(e.get("cost") or 0.0 for e in evaluations)
        for result, evaluations in batch
    )


def _paid(result: dict[str, Any]) -> float:
    """What the answer's calls cost now: not a step the response cache answered (a result's own
    `cost` counts it), nor a reused or recorded output; `paid` is given by whoever made calls."""
    if "paid" in result:
        return result["paid"] or 0.0
    return 0.0 if result.get("cached") else result.get("cost") or 0.0


@dataclass(frozen=True, slots=True)
class Closing:
    """A chunk's cases, closed with its last batch."""

    positions: Sequence[int]
    repetitions: range
    expected: int


@dataclass(frozen=True, slots=True)
class Written:
    ended: bool  # the run had ended, or this batch spent the rest of its budget
    missing: int = 0  # of a closing chunk's results


async def write(
    session: AsyncSession,
    run: Run,
    batch: Batch,
    *,
    steps: Sequence[events.Event] = (),
    closing: Closing | None = None,
) -> Written:
    """One flush of a chunk's writer, under the run's row lock (writers of one run take turns,
    so each progress event counts every result committed before it): live events (an agent's
    steps), results with their evaluations (one already written, by an earlier attempt at the
    chunk, is skipped with its evaluations), their events, the run's counts and spending; then
    maybe the run's end (its budget spent, or its last result in)."""
    locked = await crud.lock_run(session, run.id)
    if locked is None or locked.status in TERMINAL:
        # Results that came in after the run ended are not written, but what they cost was
        # spent: it counts.
        cost = spending(batch)
        if cost:
            await events.record(session, run, [], spent=cost)
        return Written(ended=True)
    written = await _insert(session, batch)
    changes = [*steps, *(events.result_reference(result["id"]) for result, _ in written)]
    cost = spending(written) + await _paid_for_duplicates(session, batch, written)
    end = await _over_budget(session, run.id, locked, cost) if cost else None
    missing = 0
    if end is None and closing is not None:
        # A result is unique per case and repetition, and the run's total counts its planned
        # ones: with exactly that many in, none of this chunk's is missing. The run's count is
        # one read; the chunk's own results, four round trips, read only otherwise (a count
        # past the total is not trusted to say the chunk is whole).
        done = await crud.count_results(session, run.id)
        if done != locked.total:
            missing = closing.expected - await crud.count_results(
                session, run.id, closing.positions, closing.repetitions
            )
        if not missing and done >= locked.total:
            end = ("completed", None)
    if written:
        on_commit(session, lambda: _count_cases(written))
        changes.append(await events.progress(session, run, locked.total))
    if end is None:
        if changes or cost:
            await events.record(session, run, changes, spent=cost)
        return Written(ended=False, missing=missing)
    status, error = end
    await end_run(session, run, status, error=error, before=changes, spent=cost)
    return Written(ended=status == "stopped", missing=missing)


async def record_batch(session: AsyncSession, run: Run, batch: Batch) -> bool:
    """A batch alone (`write`): True when it spent the rest of the run's budget, or the run had
    ended."""
    return (await write(session, run, batch)).ended


async def _insert(session: AsyncSession, batch: Batch) -> Batch:
    inserted = await crud.insert_results(session, [result for result, _ in batch])
    written = [(result, evaluations) for result, evaluations in batch if result["id"] in inserted]
    rows = []
    for result, evaluations in written:
        for evaluation in evaluations:  # the batch's own rows: named in place, not copied
            evaluation["result_id"], evaluation["position"] = result["id"], result["position"]
            rows.append(evaluation)
    await evaluation_crud.insert_evaluations(session, rows)
    return written


async def _paid_for_duplicates(session: AsyncSession, batch: Batch, written: Batch) -> float:
    """What the batch's results for cases already written by another attempt cost (a chunk
    taken over while its first worker still ran): not kept, but paid for all the same. A result
    this attempt wrote itself (a commit whose reply was lost, then written again) counted then."""
    kept = {result["id"] for result, _ in written}
    others = [(result, evaluations) for result, evaluations in batch if result["id"] not in kept]
    if not others:
        return 0.0
    ours = await crud.known_results(session, [result["id"] for result, _ in others])
    return spending([pair for pair in others if pair[0]["id"] not in ours])


async def _over_budget(
    session: AsyncSession, run_id: uuid.UUID, locked: crud.Locked, cost: float
) -> tuple[str, str | None] | None:
    """The run's end when what it had spent, and this batch's `cost`, reach its budget with
    results still to come."""
    spent, budget = locked.spent + cost, locked.max_cost
    if budget is None or spent < budget:
        return None
    left = locked.total - await crud.count_results(session, run_id)
    if not left:
        return None  # the last results are in: the run completes (its chunk's close)
    return (
        "stopped",
        f"budget reached: {spent:.4f} USD spent of {budget:.4f}; {left} result(s) not run",
    )


def _count_cases(written: Batch) -> None:
    cases = metrics().cases
    for status, count in Counter(
        result.get("status") or "unknown" for result, _ in written
    ).items():
        cases.labels(status).inc(count)


async def fail_run(session: AsyncSession, run_id: uuid.UUID, error: str) -> None:
    """The run's work gave up for good: it ends as failed rather than running forever."""
    run = await crud.get_run(session, run_id)
    if run is not None:
        await end_run(session, run, "failed", error=error[:2000])
