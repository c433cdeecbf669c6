"""A chunk's writer: buffers results and writes them in one transaction per batch, noticing a
cancel; the last batch is written with the chunk's closing checks, so the run completes with
the write of its last results."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError

from app.engine.context import JobContext
from database.results import events, execution
from database.results.models import Run
from database.tests import crud as test_crud

log = structlog.get_logger(__name__)

FLUSH_SECONDS = 0.25
# A batch's transaction costs about the same for 100 rows as for 500 (the run's row lock, its
# counts, the events' sequence), so larger batches spend less CPU per case; but a batch the
# size of its chunk is written only once the chunk's cases are all done, after them rather
# than beside them. A batch is therefore at most FLUSH_ROWS and half its chunk: a fast
# provider's chunk of 500 (run_chunk_size) writes twice while its cases run (each write takes
# whatever came in meanwhile), and a 1,000-case run ends about a tenth sooner for 2-4 % more
# CPU per case. A small chunk has no write worth overlapping: under twice FLUSH_MIN_ROWS, its
# results go with its close. A slower pace is written every FLUSH_SECONDS whatever the size.
FLUSH_ROWS = 200
FLUSH_MIN_ROWS = 50
# Large outputs are written sooner than their batch's rows say: a write's text is encoded on
# the loop, and is split (utils/crud.py) only once it is large.
FLUSH_OUTPUT_CHARS = 32 * 1024 * 1024

Batch = list[tuple[dict[str, Any], list[dict[str, Any]]]]
DELETED_TEST = "fk_results_test_id_tests"  # the foreign key a deleted test's results fail


class ChunkWriter:
    def __init__(
        self,
        ctx: JobContext,
        run: Run,
        positions: list[int],
        repetitions: range,
        *,
        expected: int,
    ) -> None:
        self.ctx = ctx
        self.run = run
        self.positions = positions
        self.repetitions = repetitions
        self.expected = expected
        small = expected < 2 * FLUSH_MIN_ROWS
        self.batch_rows = max(1, expected) if small else min(FLUSH_ROWS, expected // 2)
        # What the run had spent when the chunk started, and what this chunk has spent since:
        # the lanes take no new case once the budget is gone (the database decides the end).
        self.spent = run.spent or 0.0
        self.missing = 0
        self._stopping = False
        self.rows: Batch = []
        self._output_chars = 0  # of the rows buffered
        self.events: list[events.Event] = []  # an agent's steps, written before results
        self.cancelled_event = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def cancelled(self) -> bool:
        return self.cancelled_event.is_set()

    @property
    def over_budget(self) -> bool:
        return self.run.max_cost is not None and self.spent >= self.run.max_cost

    def add(self, result: dict[str, Any], evaluations: list[dict[str, Any]]) -> None:
        # Never waits for the database: a full batch wakes the flusher, and the lane moves on
        # to its next case (a lane writing a batch itself would idle for the round trip).
        self.rows.append((result, evaluations))
        self.spent += execution.spending([(result, evaluations)])
        self._output_chars += len(result.get("output") or "")
        if (
            len(self.rows) >= self.batch_rows
            or self._output_chars >= FLUSH_OUTPUT_CHARS
            or self.over_budget
        ):
            self._batch_full.set()

    def event(self, event: events.Event) -> None:
        """A live event of a case under way (an agent's step): written with the next batch,
        before any result of that batch, so a case's steps come before its result."""
        self.events.append(event)

    def flush_soon(self) -> None:
        """Writes what is buffered now rather than at the next tick."""
        self._batch_full.set()

    def stop(self) -> None:
        """Ends flush_periodically (after a write in progress); the chunk writes the rest."""
        self._stopping = True
        self._batch_full.set()

    async def flush_periodically(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_SECONDS):
                    await self._batch_full.wait()
            self._batch_full.clear()
            if self._stopping:
                return
            try:
                await self.flush()
            except Exception as exc:  # e.g. the database restarting: keep the rows, try again
                log.warning("writing results failed; will retry", error=str(exc))

    async def flush(self, *, last: bool = False) -> None:
        try:
            await self._flush(last=last)
        except IntegrityError as exc:
            if DELETED_TEST not in str(exc):
                raise
            # A test deleted while its run was under way: its results not yet written keep no
            # test, as those written before the deletion do (SET NULL). Else the batch would
            # fail at every flush, and the chunk be run again, paying for every case anew.
            await self._forget_deleted_tests()
            await self._flush(last=last)

    async def _forget_deleted_tests(self) -> None:
        named = {result["test_id"] for result, _ in self.rows if result.get("test_id")}
        async with self.ctx.transaction() as session:
            there = await test_crud.existing_test_ids(
                session, list(named), project_id=self.run.project_id
            )
        for result, _ in self.rows:
            if result.get("test_id") not in there:
                result["test_id"] = None

    async def _flush(self, *, last: bool) -> None:
        async with self._lock:
            batch, self.rows, self._output_chars = self.rows, [], 0
            steps, self.events = self.events, []
            closing = (
                execution.Closing(self.positions, self.repetitions, self.expected) if last else None
            )
            try:
                async with self.ctx.transaction() as session:
                    written = await execution.write(
                        session, self.run, batch, steps=steps, closing=closing
                    )
            except BaseException:
                self.rows = batch + self.rows  # not written: keep them for the next flush
                self._output_chars += sum(len(r.get("output") or "") for r, _ in batch)
                self.events = steps + self.events
                raise
            self.missing = written.missing
            if written.ended:
                self.cancelled_event.set()  # cancelled (or ended elsewhere): stop, write no more
