"""What the engine records as it runs a run's chunks: the start, each batch of results (and
what they cost against the run's budget), each chunk's close, and the end."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.core import on_commit
from database.evaluations import crud as evaluation_crud
from database.results import crud, events
from database.results.gates import end_run
from database.results.models import Run
from utils.metrics import metrics

Batch = Sequence[tuple[dict[str, Any], list[dict[str, Any]]]]


async def start_chunk(session: AsyncSession, run: Run) -> None:
    """A chunk starts: the first one marks a queued run running."""
    if run.status == "queued" and await crud.set_status(
        session, run.id, "running", only_from=("queued",)
    ):
        await events.record(session, run, [events.started(run)])


def spending(batch: Batch) -> float:
    """What a batch cost: the target's calls (a cached or reused output cost nothing now) and
    every judge's."""
    return sum(
        (result.get("cost") or 0.0) * (not result.get("cached"))
        + sum(e.get("cost") or 0.0 for e in evaluations)
        for result, evaluations in batch
    )


async def record_batch(session: AsyncSession, run: Run, batch: Batch) -> bool:
    """Results with their evaluations (a result already written, by an earlier attempt at the
    chunk, is skipped with its evaluations), then their events, the run's counts and its
    spending. True when the batch spent the rest of the run's budget: the run has stopped."""
    inserted = await crud.insert_results(session, [result for result, _ in batch])
    written = [(result, evaluations) for result, evaluations in batch if result["id"] in inserted]
    rows = []
    for result, evaluations in written:
        for evaluation in evaluations:  # the batch's own rows: named in place, not copied
            evaluation["result_id"] = result["id"]
            rows.append(evaluation)
    await evaluation_crud.insert_evaluations(session, rows)
    if written:
        on_commit(session, lambda: _count_cases(written))
        await events.record_progress(
            session,
            run,
            [events.result_reference(result["id"]) for result, _ in written],
        )
    cost = spending(written)
    if not cost:
        return False
    spent = await crud.add_spending(session, run.id, cost)
    if run.max_cost is None or spent < run.max_cost:
        return False
    left = run.total - await crud.count_results(session, run.id)
    if not left:
        return False  # the last results are in: the run completes (close_chunk)
    return await end_run(
        session,
        run,
        "stopped",
        error=f"budget reached: {spent:.4f} USD spent of {run.max_cost:.4f}; "
        f"{left} result(s) not run",
    )


def _count_cases(written: Batch) -> None:
    cases = metrics().cases
    for status, count in Counter(
        result.get("status") or "unknown" for result, _ in written
    ).items():
        cases.labels(status).inc(count)


async def record_unwritten(session: AsyncSession, run: Run, batch: Batch) -> None:
    """Results that came in after the run ended are not written, but what they cost was
    spent: it counts."""
    cost = spending(batch)
    if cost:
        await crud.add_spending(session, run.id, cost)


async def close_chunk(
    session: AsyncSession,
    run: Run,
    positions: Sequence[int],
    repetitions: range,
    *,
    expected: int,
) -> int:
    """How many results the chunk still misses; with none missing anywhere, the run
    completes (in this same transaction)."""
    missing = expected - await crud.count_results(session, run.id, positions, repetitions)
    if not missing and await crud.count_results(session, run.id) >= run.total:
        await end_run(session, run, "completed")
    return missing


async def fail_run(session: AsyncSession, run_id: uuid.UUID, error: str) -> None:
    """The run's work gave up for good: it ends as failed rather than running forever."""
    run = await crud.get_run(session, run_id)
    if run is not None:
        await end_run(session, run, "failed", error=error[:2000])
