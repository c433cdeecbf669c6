"""The worker pool: an asyncio daemon started by the process bootstrap (API or worker-only).

It claims jobs when woken by NOTIFY (through the process's shared listener) or every few
seconds (lost wake-ups), runs up to `concurrency` at once, renews their leases, and hands
unfinished ones back when it stops. What a job kind does is not its business: the process
that builds the pool gives it the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from database.core import Database, Tenant
from notifications.listener import Listener
from tasks import queue
from tasks.queue import ClaimedJob
from utils import ssrf, tracing
from utils.storable import storable

log = structlog.get_logger(__name__)

POLL_SECONDS = 2.0
LEASE = timedelta(seconds=30)
# A dead job's consequence (on_dead) tried this often, a pause longer each time, before the
# job is buried without it.
ON_DEAD_TRIES = 3
ON_DEAD_PAUSE = 0.5


@dataclass(frozen=True)
class JobContext:
    job: ClaimedJob
    database: Database
    worker: str

    @property
    def kind(self) -> str:
        return self.job.kind

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    @property
    def attempt(self) -> int:
        return self.job.attempts

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A transaction scoped to the job's organization: RLS applies to workers too."""
        return self.database.transaction(Tenant(self.job.organization_id))


Handler = Callable[[JobContext], Awaitable[None]]
DeadHandler = Callable[[JobContext, AsyncSession, str], Awaitable[None]]


# The pools started in this process (readiness reports on them).
_started: set[WorkerPool] = set()


def started_pools() -> list[WorkerPool]:
    return list(_started)


class WorkerPool:
    def __init__(
        self,
        database: Database,
        handlers: dict[str, Handler],
        *,
        concurrency: int,
        listener: Listener | None = None,
        listen_url: str | None = None,
        on_dead: DeadHandler | None = None,
        poll_seconds: float = POLL_SECONDS,
        lease: timedelta = LEASE,
        shares: Mapping[str, int] | None = None,
        per_organization: Mapping[str, int] | None = None,
    ) -> None:
        self.database = database
        self.handlers = handlers
        self.on_dead = on_dead
        self.concurrency = concurrency
        # Kinds of job this pool runs at most so many of at once (the rest of its slots stay
        # for the others): a kind whose jobs may each wait long on someone else's server.
        self.shares = dict(shares or {})
        # Kinds of job one organization may have at most so many of under way, in every
        # process together: one tenant's slow servers cannot take every slot of their kind.
        self.per_organization = dict(per_organization or {})
        # The process's shared listener, or (given only a URL) one of the pool's own.
        if listener is None:
            if listen_url is None:
                raise ValueError("a listener or a listen_url is needed")
            listener = Listener(listen_url)
            self._own_listener = True
        else:
            self._own_listener = False
        self.listener = listener
        listener.on(queue.CHANNEL, lambda _payload: self._wake.set())
        # After a reconnect, claim at once: jobs may have been enqueued while we were away.
        listener.on_reconnect(lambda: self._wake.set())
        self.poll_seconds = poll_seconds
        self.lease = lease
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._wake = asyncio.Event()
        self._stopping = False
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._kinds: dict[uuid.UUID, str] = {}  # of the running jobs
        # When each running job's lease runs out, by this process's clock, counted from the
        # moment the claim or its last renewal was sent (the database's count starts later).
        self._lease_ends: dict[uuid.UUID, float] = {}
        self._daemons: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self._own_listener:
            await self.listener.start()
        self._daemons = [
            asyncio.create_task(self._claim_loop(), name="worker-claim"),
            asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat"),
        ]
        _started.add(self)
        log.info("workers started", worker=self.name, concurrency=self.concurrency)

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Stop claiming, let running jobs finish for a while, then hand the rest back."""
        self._stopping = True
        _started.discard(self)
        self._wake.set()
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=drain_seconds)
        unfinished = list(self._running)
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        for daemon in self._daemons:
            daemon.cancel()
        await asyncio.gather(*self._daemons, return_exceptions=True)
        if self._own_listener:
            await self.listener.stop()
        if unfinished:
            with contextlib.suppress(Exception):
                async with self.database.transaction() as session:
                    await queue.release(session, worker=self.name, job_ids=unfinished)
        log.info("workers stopped", worker=self.name, handed_back=len(unfinished))

    @property
    def busy(self) -> int:
        return len(self._running)

    @property
    def running(self) -> bool:
        """Claiming and renewing leases: neither loop has died."""
        return bool(self._daemons) and not any(daemon.done() for daemon in self._daemons)

    # --- loops --------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            # Clear before claiming, not after: a wake-up arriving during the claim (a job
            # committed too late for it to see) must start another round, not wait for a poll.
            self._wake.clear()
            limit, skipped = self._room()
            claimed: list[ClaimedJob] = []
            asked = time.monotonic()
            if limit > 0:
                try:
                    async with self.database.transaction() as session:
                        claimed = await queue.claim(
                            session,
                            worker=self.name,
                            limit=limit,
                            lease=self.lease,
                            skip_kinds=skipped,
                            per_organization=self.per_organization,
                        )
                except Exception as exc:  # the database may be restarting: keep polling
                    log.warning("claiming jobs failed", error=str(exc))
            for job in claimed:
                task = asyncio.create_task(self._run(job), name=f"job-{job.kind}-{job.id}")
                self._running[job.id] = task
                self._kinds[job.id] = job.kind
                self._lease_ends[job.id] = asked + self.lease.total_seconds()
            if claimed and len(claimed) == limit:
                continue  # there may be more waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), timeout=self.poll_seconds * random.uniform(0.8, 1.2)
                )

    def _room(self) -> tuple[int, list[str]]:
        """How many jobs to claim, and the kinds to skip: those whose share is running. A
        claim takes no more than the least share left, so one batch cannot exceed it."""
        free = self.concurrency - len(self._running)
        running = Counter(self._kinds.values())
        left = {kind: share - running[kind] for kind, share in self.shares.items()}
        skipped = sorted(kind for kind, room in left.items() if room <= 0)
        limit = min([free, *(room for room in left.values() if room > 0)])
        return limit, skipped

    async def _heartbeat_loop(self) -> None:
        """Renews the running jobs' leases every third of a lease; after a failure, again
        every twelfth. Each renewal waits at most half a renewal interval: a job whose lease
        would run out before a renewal could come back is stopped first (another worker may
        take it over then), rather than call providers beside the new one, whether the
        renewals fail or hang. It is stopped with a quarter of an interval to spare, for this
        loop's own lateness (a held event loop, a cancellation taking effect at its next
        await)."""
        interval = self.lease.total_seconds() / 3
        spare = interval / 4
        wait = interval
        renewal: asyncio.Task[set[uuid.UUID]] | None = None
        asked, renewing = 0.0, list[uuid.UUID]()
        try:
            while True:  # also while stop() drains: it cancels this loop once the jobs are done
                await asyncio.sleep(wait)
                held = list(self._running)
                if not held:
                    continue
                self._abandon_unrenewable(held, within=interval / 2 + spare)
                # Apart from this loop: a hung connection's clean-up may hang too, past a
                # timeout. One still pending is waited for again, and its answer judged by
                # what it was asked and when (jobs claimed since are not in it).
                if renewal is None or renewal.done():
                    asked, renewing = time.monotonic(), held
                    renewal = asyncio.create_task(self._renew(renewing))
                    renewal.add_done_callback(_failure)  # read, even when no longer waited for
                await asyncio.wait([renewal], timeout=interval / 2)
                failed = "it hangs" if not renewal.done() else _failure(renewal)
                if failed is not None:  # the database unreachable, or too slow to answer
                    log.warning("heartbeat failed", error=failed)
                    self._abandon_unrenewable(held, within=interval / 4 + interval / 2 + spare)
                    wait = interval / 4
                    continue
                kept = renewal.result()
                wait = interval
                for job_id in kept:
                    self._lease_ends[job_id] = asked + self.lease.total_seconds()
                # Another worker has taken these over (our lease ran out): stop our copies.
                self._abandon(set(renewing) - kept, "lease lost")
        finally:
            if renewal is not None:
                renewal.cancel()

    async def _renew(self, held: list[uuid.UUID]) -> set[uuid.UUID]:
        async with self.database.transaction() as session:
            return await queue.heartbeat(session, worker=self.name, job_ids=held, lease=self.lease)

    def _abandon_unrenewable(self, held: list[uuid.UUID], *, within: float) -> None:
        ending = time.monotonic() + within
        late = [job for job in held if self._lease_ends.get(job, math.inf) <= ending]
        self._abandon(late, "lease running out unrenewed")

    def _abandon(self, job_ids: Iterable[uuid.UUID], reason: str) -> None:
        for job_id in job_ids:
            task = self._running.get(job_id)
            if task is not None:
                log.warning(f"{reason}; abandoning job", job_id=str(job_id))
                task.cancel()

    async def _run(self, job: ClaimedJob) -> None:
        bound = log.bind(job_id=str(job.id), kind=job.kind, attempt=job.attempts)
        context = JobContext(job=job, database=self.database, worker=self.name)
        try:
            handler = self.handlers.get(job.kind)
            if handler is None:
                raise LookupError(f"no handler for job kind {job.kind!r}")
            if job.exhausted is not None:
                raise RuntimeError(job.exhausted)
            attributes = {
                "assay.job.id": str(job.id),
                "assay.job.kind": job.kind,
                "assay.job.attempt": job.attempts,
                "assay.run_id": job.payload.get("run_id"),
            }
            # The job's host lookups are its organization's (utils.ssrf), as is all it starts.
            with (
                tracing.span(f"job {job.kind}", attributes) as span,
                ssrf.lookups_for(job.organization_id),
            ):
                try:
                    await handler(context)
                except Exception as exc:
                    if not isinstance(exc, queue.HandBack):  # no failure: others' turn
                        tracing.failed(span, type(exc).__name__, str(exc)[:500])
                    raise
            async with context.transaction() as session:
                await queue.complete(session, worker=self.name, job_id=job.id)
        except asyncio.CancelledError:
            raise
        except queue.HandBack as handed:
            bound.info("job handed back", reason=str(handed))
            with contextlib.suppress(Exception):  # else its lease runs out, and it is taken over
                async with self.database.transaction() as session:
                    await queue.release(session, worker=self.name, job_ids=[job.id])
        except Exception as exc:
            bound.exception("job failed")
            status = await self._record_failure(context, exc, bound)
            if status == "lost":  # another worker holds it now: not ours to record
                bound.warning("lease lost; failure not recorded")
            elif status is not None:
                bound.info("job will retry" if status == "queued" else "job is dead")
        finally:
            self._running.pop(job.id, None)
            self._kinds.pop(job.id, None)
            self._lease_ends.pop(job.id, None)
            self._wake.set()

    async def _record_failure(self, context: JobContext, exc: Exception, bound: Any) -> str | None:
        """Schedules the job's retry, or makes it dead and tells `on_dead` in the same
        transaction (a dead job and its consequence commit together). An `on_dead` that fails
        is tried again (a deadlock or a dropped connection passes), `ON_DEAD_TRIES` times in
        all; then the job is made dead without it, its error saying so: left running, it would
        be taken over when its lease ran out (which counts no attempt) and run again past its
        last attempt. The status, or None if none was recorded (the lease runs out: the job is
        taken over)."""
        error = _described(exc)
        retry_in = exc.seconds if isinstance(exc, queue.RetryLater) else None
        try:
            for tried in range(1, ON_DEAD_TRIES + 1):
                try:
                    return await self._fail(context, error, retry_in, self.on_dead)
                except _OnDeadFailed as failed:
                    cause = failed.cause
                    bound.error("on_dead failed", tried=tried, exc_info=cause)
                    if tried < ON_DEAD_TRIES:
                        await asyncio.sleep(ON_DEAD_PAUSE * tried)
            error = f"on_dead failed ({_described(cause)[:500]}) after: {error}"
            return await self._fail(context, error, retry_in, None)
        except Exception as unrecorded:
            bound.warning("failure not recorded", error=_described(unrecorded))
            return None

    async def _fail(
        self,
        context: JobContext,
        error: str,
        retry_in: float | None,
        on_dead: DeadHandler | None,
    ) -> str:
        """`queue.fail` in a transaction of its own, `on_dead` told in it when the job is dead
        (what `on_dead` raises comes as `_OnDeadFailed`)."""
        async with context.transaction() as session:
            status = await queue.fail(
                session, worker=self.name, job=context.job, error=error, retry_in=retry_in
            )
            if status == "dead" and on_dead is not None:
                try:
                    await on_dead(context, session, error)
                except Exception as exc:
                    raise _OnDeadFailed(exc) from exc
        return status


class _OnDeadFailed(Exception):
    """What a job's `on_dead` raised."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _failure(done: asyncio.Task[Any]) -> str | None:
    """What a finished task failed with, if it did."""
    if done.cancelled():
        return "cancelled"
    exc = done.exception()
    return None if exc is None else str(exc) or type(exc).__name__


def _described(exc: Exception) -> str:
    """A failure as the job (and a run that ends with it) records it, storable (an error's text
    may hold a NUL). A database error by the driver's message, without its statement and
    parameters (the driver keeps a message's detail apart): they hold the tenant's rows, and
    the log keeps them whole."""
    if isinstance(exc, StatementError) and exc.orig is not None:
        return storable(f"{type(exc).__name__}: {exc.orig}")
    return storable(f"{type(exc).__name__}: {exc}")
