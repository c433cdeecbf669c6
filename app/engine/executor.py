"""The executor of a run: the job handler that fans a chunk's cases out under the run's
concurrency, runs each (app/engine/case.py) and writes the results in small batches
(app/engine/writer.py).

A run is queued as `run.chunk` jobs (see `database.results.service`); several workers (and
processes) share the chunks, and the first chunk to start marks the run running. Each result
is unique per (run, case position, repetition): a chunk resumed after a crash only does the
cases with no result yet, and a duplicate write is skipped, never doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.engine.case import run_case
from app.engine.context import JobContext
from app.engine.plan import Plan, Unrunnable, make_plan
from app.engine.sources import SourceResults
from app.engine.writer import ChunkWriter
from database.results import crud, execution
from database.results.crud import rescore_sources
from database.results.models import CHUNK_JOB, TERMINAL, Run
from database.results.service import chunk_repetitions
from database.test_sets.crud.version_cases import VersionCase
from database.test_sets.crud.version_cases import version_cases as read_version_cases
from tasks import queue
from tasks.queue import HandBack
from utils.config import get_settings

log = structlog.get_logger(__name__)

MAX_PARALLEL_CHUNKS = 4
FLUSHER_STOP_SECONDS = 10.0
# Another organization's job has waited this long for a worker: not one a free worker is
# about to claim.
OTHERS_WAITED_SECONDS = 2.0


async def run_chunk(ctx: JobContext) -> None:
    """`run.chunk`: execute the chunk's cases that have no result yet, then maybe finish."""
    run_id = uuid.UUID(ctx.payload["run_id"])
    positions: list[int] = ctx.payload["positions"]
    async with ctx.transaction() as session:
        run = await crud.get_run(session, run_id)
        if run is None or run.status in TERMINAL:
            return
        await execution.start_chunk(session, run)
    # Kept apart from the status change: a chunk starting at the same moment waits for that
    # row lock, and it is held only for the short transaction above.
    repetitions = chunk_repetitions(ctx.payload, run.repetitions)
    async with ctx.transaction() as session:
        # A run with no result yet (its count is one read) has none of this chunk's.
        started = await crud.count_results(session, run.id) > 0
        done = await crud.done_keys(session, run.id, positions) if started else set()
        cases = await read_version_cases(session, run.test_set_version_id, positions)
        plan: Plan | None = None
        try:
            plan = await make_plan(session, run)
        except Unrunnable as gone:
            unrunnable = str(gone)
        source_run = run.outputs_from_run_id
        sizes = (
            await rescore_sources.source_sizes(
                session, source_run, positions, repetitions, written_by=run.created_at
            )
            if source_run
            else None
        )
    if plan is None:  # the run fails now, rather than after every retry of its chunks
        async with ctx.transaction() as session:
            await execution.fail_run(session, run.id, unrunnable)
        return
    # A rescore does the results its source had when it was made; a run, every one of the
    # chunk's repetitions.
    keys = [
        (case, repetition)
        for case in cases
        for repetition in repetitions
        if sizes is None or (case.position, repetition) in sizes
    ]
    work = [
        (case, repetition) for case, repetition in keys if (case.position, repetition) not in done
    ]
    sources = (
        SourceResults(ctx, source_run, [(case.position, rep) for case, rep in work], sizes)
        if source_run is not None and sizes is not None
        else None
    )
    parallel = min(int(ctx.payload.get("chunks", 1)), MAX_PARALLEL_CHUNKS)
    concurrency = max(1, math.ceil(run.concurrency / parallel))
    writer = ChunkWriter(ctx, run, positions, repetitions, expected=len(keys))
    with _run_slots(run) as slots:
        await _execute(ctx, run, plan, work, sources, concurrency, writer, slots)
    if writer.missing:
        # Never end a chunk with holes: failing makes the queue retry (and resume) it.
        raise RuntimeError(f"{writer.missing} case(s) of this chunk have no result yet")


# A run's cases in flight in this process, across its chunks: each chunk's lanes are its share
# of the run's concurrency, rounded up (a run of concurrency 1 in four chunks has four lanes),
# so the run's own count is what holds them to it.
_slots: dict[uuid.UUID, tuple[asyncio.Semaphore, int]] = {}


@contextlib.contextmanager
def _run_slots(run: Run) -> Iterator[asyncio.Semaphore]:
    slots, users = _slots.get(run.id, (asyncio.Semaphore(run.concurrency), 0))
    _slots[run.id] = (slots, users + 1)
    try:
        yield slots
    finally:
        slots, users = _slots[run.id]
        if users == 1:
            del _slots[run.id]
        else:
            _slots[run.id] = (slots, users - 1)


async def mark_run_failed(ctx: JobContext, session: AsyncSession, error: str) -> None:
    """A run's job gave up for good: the run ends as failed rather than running forever."""
    await execution.fail_run(session, uuid.UUID(ctx.payload["run_id"]), error)


async def _execute(
    ctx: JobContext,
    run: Run,
    plan: Plan,
    work: list[tuple[VersionCase, int]],
    sources: SourceResults | None,
    concurrency: int,
    writer: ChunkWriter,
    slots: asyncio.Semaphore,
) -> None:
    queued = iter(work)
    untaken = len(work)
    turn_over = asyncio.Event()  # set once others' work has waited: take no new case
    left: list[tuple[VersionCase, int]] = []  # taken, then left for the chunk's next turn

    async def lane() -> None:
        nonlocal untaken
        # `concurrency` lanes share one iterator (next() never yields, so each case is taken
        # once): cheaper than a task per case queued on a semaphore.
        for case, repetition in queued:
            if turn_over.is_set():
                left.append((case, repetition))
                return
            async with slots:
                if writer.cancelled or writer.over_budget:
                    return
                untaken -= 1
                if untaken == 0:
                    # The last case is under way: what is buffered is written while the last
                    # cases run, and the chunk's closing write carries only theirs.
                    writer.flush_soon()
                source = await sources.take((case.position, repetition)) if sources else None
                outcome = await run_case(
                    ctx, run, plan, case, repetition, source, on_event=writer.event
                )
            writer.add(*outcome)

    flusher = asyncio.create_task(writer.flush_periodically())
    tasks = [asyncio.create_task(lane()) for _ in range(min(concurrency, len(work)))]
    watcher: asyncio.Task[Any] = asyncio.create_task(writer.cancelled_event.wait())
    turns = asyncio.create_task(_others_waiting(ctx, run, turn_over))
    ended = False
    try:
        pending: set[asyncio.Task[Any]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(
                pending | {watcher}, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(watcher)
            if watcher in done:
                break  # cancelled: the finally below stops what is in flight
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
        ended = True
    finally:
        watcher.cancel()
        turns.cancel()
        if turn_over.is_set():  # its turn given: its siblings may ask again a turn from now
            _handed_back[run.organization_id] = time.monotonic()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A write in progress is let finish: cancelling it mid-statement would cost its
        # database connection (the pool discards a connection in an unknown state).
        writer.stop()
        if not (await asyncio.wait({flusher}, timeout=FLUSHER_STOP_SECONDS))[0]:
            flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        if not ended:
            await _keep_what_is_done(writer)
    if left and not (writer.cancelled or writer.over_budget):
        await writer.flush()
        _handed_back[run.organization_id] = time.monotonic()  # a turn from the release
        raise HandBack("another organization's work waited: the chunk's other cases go later")
    await writer.flush(last=True)


# When a chunk of each organization last handed back in this process (infinity while one
# is handing back): its siblings ask again only a turn later. Until its cases in flight end,
# the chunk still counts as under way, and they would see the same job waiting and all hand
# back for it. One sibling asks at a time: two asking together would both see it waiting.
_handed_back: dict[uuid.UUID, float] = {}
_asking: set[uuid.UUID] = set()


async def _others_waiting(ctx: JobContext, run: Run, turn_over: asyncio.Event) -> None:
    """Sets `turn_over` once, after the chunk has run its turn (`chunk_turn_seconds`), another
    organization's job has waited for a worker: one organization's long chunks would else hold
    every worker until they end."""
    every = get_settings().chunk_turn_seconds
    while True:
        # Chunks started together ask apart: the first to hand back frees the worker, and
        # those asking after it find nothing waiting.
        await asyncio.sleep(every * random.uniform(0.75, 1.25))
        organization = run.organization_id
        if (
            organization in _asking
            or time.monotonic() - _handed_back.get(organization, -math.inf) < every
        ):
            continue
        _asking.add(organization)
        try:
            async with ctx.transaction() as session:
                waiting = await queue.others_waiting(
                    session,
                    organization_id=organization,
                    waited=OTHERS_WAITED_SECONDS,
                    kinds=[CHUNK_JOB],
                )
        except Exception as exc:  # the database restarting, say: the chunk goes on
            log.warning("could not tell whether others' work waits", error=str(exc))
            continue
        finally:
            _asking.discard(organization)
        if waiting:
            _handed_back[run.organization_id] = math.inf  # until its cases in flight end
            turn_over.set()
            return


async def _keep_what_is_done(writer: ChunkWriter) -> None:
    """The chunk stops on an error or a cancel (a worker shutting down): the results already
    answered are written all the same, so the chunk's resumption does not pay for them again.
    Whatever stopped the chunk is what it raises; a failing write here only costs the rows."""
    if not (writer.rows or writer.events):
        return
    try:
        async with asyncio.timeout(FLUSHER_STOP_SECONDS):
            await writer.flush()
    except Exception as exc:
        log.warning("writing the results of a stopped chunk failed", error=str(exc))
