"""The worker pool against a real database: woken by NOTIFY (also during a claim, and after its
listener reconnects), retries and dead jobs, the concurrency limit, tenant-scoped handler
transactions, draining on stop, lease renewal and loss, and taking over a dead worker's jobs."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from database.core import Database, make_engine
from database.setup import DatabaseUrls
from notifications import listener
from tasks import queue
from tasks.models import Job
from tasks.worker import DeadHandler, Handler, JobContext, WorkerPool
from tests.helpers import Account, tenant_session, until_waiting_for_locks
from tests.tasks.conftest import (
    enqueue_jobs,
    load_job,
    new_kind,
    wait_for_status,
    wait_until,
)
from tests.tasks.relay import relayed

LISTEN_QUERY = f'LISTEN "{queue.CHANNEL}"'


@contextlib.asynccontextmanager
async def running_pool(
    database: Database,
    database_urls: DatabaseUrls,
    handlers: dict[str, Handler],
    *,
    concurrency: int = 2,
    poll_seconds: float = 30.0,
    lease: timedelta = timedelta(seconds=10),
    on_dead: DeadHandler | None = None,
    drain_seconds: float = 2.0,
    shares: dict[str, int] | None = None,
    per_organization: dict[str, int] | None = None,
) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(
        database,
        handlers,
        concurrency=concurrency,
        listen_url=database_urls.runtime,
        on_dead=on_dead,
        poll_seconds=poll_seconds,
        lease=lease,
        shares=shares,
        per_organization=per_organization,
    )
    listening = await _listeners(database)
    await pool.start()
    try:
        # The pool's LISTEN connection is up: from now on a commit wakes it.
        await wait_until(lambda: _more_listeners(database, listening), within=10)
        yield pool
    finally:
        await pool.stop(drain_seconds=drain_seconds)


async def _listeners(database: Database) -> int:
    """Connections of the runtime role that LISTEN on the queue's channel."""
    async with database.engine.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE query = :query"),
            {"query": LISTEN_QUERY},
        )
    return int(count or 0)


async def _more_listeners(database: Database, than: int) -> bool:
    return await _listeners(database) > than


# --- running jobs -----------------------------------------------------------------------------


async def test_a_committed_job_runs_at_once_woken_by_notify(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    account = accounts[0]
    kind = new_kind()
    ran: list[JobContext] = []
    done = asyncio.Event()

    async def handler(ctx: JobContext) -> None:
        ran.append(ctx)
        done.set()

    async with running_pool(committed_database, database_urls, {kind: handler}) as pool:
        await asyncio.sleep(0.2)  # the pool is idle, waiting out a 30 s poll
        started = time.monotonic()
        [job_id] = await enqueue_jobs(committed_database, account, kind)
        await asyncio.wait_for(done.wait(), timeout=5)
        # Well before the poll (30 s, give or take a fifth): NOTIFY woke the pool.
        assert time.monotonic() - started < 5
        await wait_for_status(committed_database, account, [job_id], "done")

    [ctx] = ran
    assert (ctx.job.id, ctx.job.kind, ctx.job.payload, ctx.job.attempts) == (
        job_id,
        kind,
        {"n": 0},
        1,
    )
    assert ctx.job.organization_id == account.organization_id
    assert ctx.worker == pool.name
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.attempts, job.locked_by, job.last_error) == ("done", 1, None, None)
    assert job.finished_at is not None


async def test_a_wake_up_arriving_during_a_claim_is_not_lost(
    committed_database: Database,
    accounts: list[Account],
    database_urls: DatabaseUrls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job committed while the pool is claiming (too late for that claim to see) must not
    wait for the next poll: its NOTIFY arrived while the pool was busy, not lost."""
    account = accounts[0]
    kind = new_kind()
    done = asyncio.Event()
    injected: list[uuid.UUID] = []
    real_claim = queue.claim
    listening = await _listeners(committed_database)

    async def handler(ctx: JobContext) -> None:
        done.set()

    async def claim_racing_an_enqueue(session: Any, **options: Any) -> list[queue.ClaimedJob]:
        claimed = await real_claim(session, **options)
        if not injected:
            await wait_until(lambda: _more_listeners(committed_database, listening), within=10)
            await asyncio.sleep(0.2)  # the listener is settled
            injected.extend(await enqueue_jobs(committed_database, account, kind))
            await asyncio.sleep(0.3)  # its NOTIFY reaches the pool while this claim is open
        return claimed

    monkeypatch.setattr(queue, "claim", claim_racing_an_enqueue)
    async with running_pool(committed_database, database_urls, {kind: handler}):
        await asyncio.wait_for(done.wait(), timeout=5)  # the poll would take 24 s or more
        await wait_for_status(committed_database, account, injected, "done")


async def test_a_failing_job_is_retried_then_dead_and_on_dead_is_told(
    committed_database: Database,
    accounts: list[Account],
    database_urls: DatabaseUrls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = accounts[0]
    kind = new_kind()
    monkeypatch.setattr(queue, "backoff", lambda attempts: 0.05)  # retry (almost) at once
    attempts: list[int] = []
    dead: list[tuple[uuid.UUID, str, str]] = []

    async def handler(ctx: JobContext) -> None:
        attempts.append(ctx.job.attempts)
        raise ValueError(f"boom {ctx.job.attempts}")

    async def on_dead(ctx: JobContext, session: AsyncSession, error: str) -> None:
        dead.append((ctx.job.id, ctx.job.kind, error))

    async with running_pool(
        committed_database, database_urls, {kind: handler}, poll_seconds=0.1, on_dead=on_dead
    ):
        [job_id] = await enqueue_jobs(committed_database, account, kind, max_attempts=3)

        async def told() -> bool:
            return bool(dead)

        await wait_until(told, within=10)
        await asyncio.sleep(0.3)  # nothing more happens to a dead job

    assert attempts == [1, 2, 3]
    assert dead == [(job_id, kind, "ValueError: boom 3")]
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.attempts, job.last_error) == ("dead", 3, "ValueError: boom 3")
    assert job.locked_by is None and job.finished_at is not None


async def test_a_job_of_an_unknown_kind_dies_with_a_clear_error(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    account = accounts[0]
    kind = new_kind()
    dead: list[str] = []

    async def on_dead(ctx: JobContext, session: AsyncSession, error: str) -> None:
        dead.append(error)

    async with running_pool(committed_database, database_urls, {}, on_dead=on_dead):
        [job_id] = await enqueue_jobs(committed_database, account, kind, max_attempts=1)
        await wait_for_status(committed_database, account, [job_id], "dead")
    assert dead == [f"LookupError: no handler for job kind {kind!r}"]
    assert (await load_job(committed_database, account, job_id)).last_error == dead[0]


FAILING_STATEMENTS = {
    "a parameter": ("SELECT length(:secret) / 0", {"secret": "tenant-row-17"}),
    "a detail": (
        "DO $$ BEGIN RAISE EXCEPTION 'division by zero'"
        " USING DETAIL = 'Failing row contains (tenant-row-17).'; END $$",
        {},
    ),
}


@pytest.mark.parametrize("statement", FAILING_STATEMENTS.values(), ids=FAILING_STATEMENTS.keys())
async def test_a_database_error_is_recorded_without_its_statement_and_parameters(
    committed_database: Database,
    accounts: list[Account],
    database_urls: DatabaseUrls,
    statement: tuple[str, dict[str, str]],
) -> None:
    account = accounts[0]
    kind = new_kind()

    async def handler(ctx: JobContext) -> None:
        async with ctx.transaction() as session:
            await session.execute(text(statement[0]), statement[1])

    async with running_pool(committed_database, database_urls, {kind: handler}):
        [job_id] = await enqueue_jobs(committed_database, account, kind, max_attempts=1)
        await wait_for_status(committed_database, account, [job_id], "dead")
    error = (await load_job(committed_database, account, job_id)).last_error
    assert error is not None and error.endswith("Error: division by zero")
    assert "SELECT" not in error and "tenant-row-17" not in error


async def test_no_more_than_concurrency_jobs_run_at_once(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    account = accounts[0]
    kind = new_kind()
    running = 0
    most = 0
    finished: list[uuid.UUID] = []

    async def handler(ctx: JobContext) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.1)
        finally:
            running -= 1
        finished.append(ctx.job.id)

    async with running_pool(
        committed_database, database_urls, {kind: handler}, concurrency=3
    ) as pool:
        ids = await enqueue_jobs(committed_database, account, kind, 10)

        async def all_finished() -> bool:
            assert pool.busy <= 3
            return len(finished) == len(ids)

        await wait_until(all_finished, within=10, interval=0.01)
        await wait_for_status(committed_database, account, ids, "done")
    assert most == 3
    assert sorted(finished) == sorted(ids)


async def test_a_handlers_transaction_is_scoped_to_its_organization(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    kind = new_kind()
    seen: dict[uuid.UUID, tuple[uuid.UUID, set[uuid.UUID], set[uuid.UUID]]] = {}
    both_running = asyncio.Barrier(2)

    async def handler(ctx: JobContext) -> None:
        # Both organizations have a running job right now; each handler sees its own only.
        await asyncio.wait_for(both_running.wait(), timeout=5)
        async with ctx.transaction() as session:
            tenant = await session.scalar(text("SELECT current_setting('app.organization_id')"))
            rows = (await session.execute(text("SELECT id, organization_id FROM jobs"))).all()
        seen[ctx.job.id] = (uuid.UUID(tenant), {row[1] for row in rows}, {row[0] for row in rows})

    first, second = accounts
    async with running_pool(committed_database, database_urls, {kind: handler}, concurrency=2):
        [first_job] = await enqueue_jobs(committed_database, first, kind)
        [second_job] = await enqueue_jobs(committed_database, second, kind)
        await wait_for_status(committed_database, first, [first_job], "done")
        await wait_for_status(committed_database, second, [second_job], "done")

    assert seen[first_job] == (first.organization_id, {first.organization_id}, {first_job})
    assert seen[second_job] == (second.organization_id, {second.organization_id}, {second_job})


# --- stopping ---------------------------------------------------------------------------------


async def test_stop_drains_then_hands_back_unfinished_jobs(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    account = accounts[0]
    quick_kind, slow_kind = new_kind(), new_kind()
    quick_started, slow_started, slow_cancelled = asyncio.Event(), asyncio.Event(), asyncio.Event()
    quick_finished = asyncio.Event()

    async def quick(ctx: JobContext) -> None:
        quick_started.set()
        await asyncio.sleep(0.3)
        quick_finished.set()

    async def slow(ctx: JobContext) -> None:
        slow_started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            slow_cancelled.set()
            raise

    pool = WorkerPool(
        committed_database,
        {quick_kind: quick, slow_kind: slow},
        concurrency=2,
        listen_url=database_urls.runtime,
        poll_seconds=0.1,
    )
    await pool.start()
    try:
        [quick_id] = await enqueue_jobs(committed_database, account, quick_kind)
        [slow_id] = await enqueue_jobs(committed_database, account, slow_kind)
        await asyncio.wait_for(quick_started.wait(), timeout=5)
        await asyncio.wait_for(slow_started.wait(), timeout=5)

        started = time.monotonic()
        await asyncio.wait_for(pool.stop(drain_seconds=1.0), timeout=10)
        elapsed = time.monotonic() - started
    finally:
        await pool.stop(drain_seconds=0)

    assert 0.9 <= elapsed < 5, elapsed  # waited out the drain for the slow job, no longer
    assert quick_finished.is_set() and slow_cancelled.is_set()
    assert pool.busy == 0
    assert (await load_job(committed_database, account, quick_id)).status == "done"
    slow_job = await load_job(committed_database, account, slow_id)
    assert (slow_job.status, slow_job.attempts) == ("queued", 0)
    assert slow_job.locked_by is None and slow_job.locked_until is None
    # Another worker may start it at once.
    async with committed_database.transaction() as session:
        claimed = await queue.claim(session, worker="next", limit=10, lease=timedelta(seconds=60))
    assert [(job.id, job.attempts) for job in claimed] == [(slow_id, 1)]


async def test_stop_returns_as_soon_as_running_jobs_finish(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    account = accounts[0]
    kind = new_kind()
    started = asyncio.Event()

    async def handler(ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(0.3)

    pool = WorkerPool(
        committed_database, {kind: handler}, concurrency=1, listen_url=database_urls.runtime
    )
    await pool.start()
    try:
        [job_id] = await enqueue_jobs(committed_database, account, kind)
        await asyncio.wait_for(started.wait(), timeout=5)
        began = time.monotonic()
        await asyncio.wait_for(pool.stop(drain_seconds=10), timeout=15)
        assert time.monotonic() - began < 3
    finally:
        await pool.stop(drain_seconds=0)
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.attempts) == ("done", 1)


# --- leases -----------------------------------------------------------------------------------


async def test_the_job_of_a_dead_worker_is_taken_over_once_its_lease_expires(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    account = accounts[0]
    kind = new_kind()
    ran: list[tuple[float, JobContext]] = []

    async def handler(ctx: JobContext) -> None:
        ran.append((time.monotonic(), ctx))

    [job_id] = await enqueue_jobs(committed_database, account, kind)
    async with committed_database.transaction() as session:
        [claimed] = await queue.claim(
            session, worker="died-mid-job", limit=1, lease=timedelta(seconds=0.8)
        )
    claimed_at = time.monotonic()
    assert claimed.id == job_id

    async with running_pool(
        committed_database,
        database_urls,
        {kind: handler},
        poll_seconds=0.1,
        lease=timedelta(seconds=2),
    ) as pool:
        await wait_for_status(committed_database, account, [job_id], "done", within=10)

    [(ran_at, ctx)] = ran
    assert ran_at - claimed_at >= 0.7, "taken while the dead worker's lease still held"
    assert (ctx.job.id, ctx.job.attempts, ctx.job.takeovers, ctx.worker) == (
        job_id,
        1,
        1,
        pool.name,
    )
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.attempts, job.takeovers) == ("done", 1, 1)


async def test_heartbeats_keep_a_long_job_from_being_taken_over(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    account = accounts[0]
    kind = new_kind()
    started = asyncio.Event()
    runs = 0

    async def handler(ctx: JobContext) -> None:
        nonlocal runs
        runs += 1
        started.set()
        await asyncio.sleep(1.5)  # well past the 0.6 s lease: only heartbeats keep it

    async with running_pool(
        committed_database, database_urls, {kind: handler}, lease=timedelta(seconds=0.6)
    ):
        [job_id] = await enqueue_jobs(committed_database, account, kind)
        await asyncio.wait_for(started.wait(), timeout=5)
        stolen: list[queue.ClaimedJob] = []
        deadline = time.monotonic() + 1.4
        while time.monotonic() < deadline:
            async with committed_database.transaction() as session:
                stolen += await queue.claim(
                    session, worker="thief", limit=10, lease=timedelta(seconds=60)
                )
            await asyncio.sleep(0.1)
        assert stolen == []
        await wait_for_status(committed_database, account, [job_id], "done")
    assert runs == 1
    assert (await load_job(committed_database, account, job_id)).attempts == 1


async def test_a_job_whose_lease_was_lost_is_abandoned(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    account = accounts[0]
    kind = new_kind()
    handler, started, cancelled = _waiting_job()

    async with running_pool(
        committed_database, database_urls, {kind: handler}, lease=timedelta(seconds=0.6)
    ) as pool:
        [job_id] = await enqueue_jobs(committed_database, account, kind)
        await asyncio.wait_for(started.wait(), timeout=5)
        # Another worker has taken the job over (as after a long pause of this one).
        async with tenant_session(committed_database, account.organization_id) as session:
            await session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(locked_by="new-owner", locked_until=func.now() + timedelta(seconds=60))
            )
        await asyncio.wait_for(cancelled.wait(), timeout=5)  # the next heartbeat notices

        async def idle() -> bool:
            return pool.busy == 0

        await wait_until(idle)
    # The pool neither completed nor failed the job it no longer holds.
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.locked_by, job.last_error) == ("running", "new-owner", None)


async def test_a_job_failing_after_its_lease_was_lost_is_not_declared_dead(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    """The handler fails on its last attempt, but another worker holds the job by then: the
    failure is not this worker's to record, and on_dead (which ends a run) must not be told."""
    account = accounts[0]
    kind = new_kind()
    dead: list[str] = []
    failed = asyncio.Event()

    async def handler(ctx: JobContext) -> None:
        async with tenant_session(committed_database, account.organization_id) as session:
            await session.execute(
                update(Job)
                .where(Job.id == ctx.job.id)
                .values(locked_by="new-owner", locked_until=func.now() + timedelta(seconds=60))
            )
        failed.set()
        raise ValueError("lost the race")

    async def on_dead(ctx: JobContext, session: AsyncSession, error: str) -> None:
        dead.append(error)

    async with running_pool(
        committed_database, database_urls, {kind: handler}, on_dead=on_dead
    ) as pool:
        [job_id] = await enqueue_jobs(committed_database, account, kind, max_attempts=1)
        await asyncio.wait_for(failed.wait(), timeout=5)

        async def idle() -> bool:
            return pool.busy == 0

        await wait_until(idle)
        await asyncio.sleep(0.2)
    assert dead == []
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.locked_by, job.last_error) == ("running", "new-owner", None)


async def test_leases_are_renewed_while_stop_drains(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    """A drain longer than the lease must not let another worker start the job meanwhile."""
    account = accounts[0]
    kind = new_kind()
    started, finished = asyncio.Event(), asyncio.Event()

    async def handler(ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(1.5)  # well past the 0.6 s lease
        finished.set()

    pool = WorkerPool(
        committed_database,
        {kind: handler},
        concurrency=1,
        listen_url=database_urls.runtime,
        lease=timedelta(seconds=0.6),
    )
    await pool.start()
    stolen: list[queue.ClaimedJob] = []
    try:
        [job_id] = await enqueue_jobs(committed_database, account, kind)
        await asyncio.wait_for(started.wait(), timeout=5)
        stopping = asyncio.create_task(pool.stop(drain_seconds=5))
        while not stopping.done():
            async with committed_database.transaction() as session:
                stolen += await queue.claim(
                    session, worker="thief", limit=10, lease=timedelta(seconds=60)
                )
            await asyncio.sleep(0.1)
        await stopping
    finally:
        await pool.stop(drain_seconds=0)
    assert stolen == []
    assert finished.is_set()
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.attempts) == ("done", 1)


async def test_the_listener_reconnects_and_catches_up(
    committed_database: Database,
    accounts: list[Account],
    database_urls: DatabaseUrls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The LISTEN connection dies: the pool reconnects and runs what was enqueued meanwhile
    at once, not at the next poll."""
    account = accounts[0]
    kind = new_kind()
    done = asyncio.Event()
    monkeypatch.setattr(listener, "RECONNECT_SECONDS", 0.5)

    async def handler(ctx: JobContext) -> None:
        done.set()

    async with running_pool(committed_database, database_urls, {kind: handler}) as pool:
        async with committed_database.engine.connect() as conn:
            killed = await conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE query = :query AND pid <> pg_backend_pid()"
                ),
                {"query": LISTEN_QUERY},
            )
        assert killed == 1
        [job_id] = await enqueue_jobs(committed_database, account, kind)  # nobody listening
        await asyncio.wait_for(done.wait(), timeout=5)  # the poll would take 24 s or more
        await wait_for_status(committed_database, account, [job_id], "done")
        assert pool.busy == 0


async def test_a_handler_may_choose_when_it_is_retried(
    committed_database: Database, database_urls: DatabaseUrls, accounts
) -> None:
    """RetryLater sets the next attempt's time (a webhook's own schedule), in place of the
    queue's backoff."""
    account = accounts[0]
    kind = new_kind()
    calls: list[float] = []

    async def handler(ctx: JobContext) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise queue.RetryLater("receiver down", 2.5)

    async with running_pool(committed_database, database_urls, {kind: handler}, poll_seconds=0.1):
        [job_id] = await enqueue_jobs(committed_database, account, kind, max_attempts=3)

        async def retried() -> bool:
            return len(calls) == 2

        await wait_until(retried, within=10)
    assert calls[1] - calls[0] >= 2.4  # the backoff would have said 1.5 s at most
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.attempts) == ("done", 2)


@pytest.mark.parametrize("partition", ["cut", "frozen"])
async def test_a_worker_cut_off_from_the_database_stops_before_its_lease_runs_out(
    committed_database: Database,
    accounts: list[Account],
    database_urls: DatabaseUrls,
    partition: str,
) -> None:
    """Its heartbeats fail (the connection refused) or hang (packets dropped), so its lease
    will run out and another worker may take the job over: it stops its copy before then,
    rather than call providers beside the new one."""
    account = accounts[0]
    kind = new_kind()
    waiting, started, cancelled = _waiting_job()
    stopped: list[float] = []

    async def handler(ctx: JobContext) -> None:
        try:
            await waiting(ctx)
        except asyncio.CancelledError:
            stopped.append(time.monotonic())
            raise

    lease = timedelta(seconds=1.5)
    async with relayed(database_urls.runtime) as relay:
        engine = make_engine(relay.url, pool_size=2, max_overflow=2)
        try:
            async with running_pool(
                Database(engine), database_urls, {kind: handler}, lease=lease
            ) as pool:
                [job_id] = await enqueue_jobs(committed_database, account, kind)
                await asyncio.wait_for(started.wait(), timeout=5)
                # The database's clock, read beside ours (not through the relay), so that the
                # moment the job stopped can be placed on it however slow what follows is.
                asked_at = time.monotonic()
                async with committed_database.transaction() as session:
                    database_now = await session.scalar(text("SELECT now()"))
                if partition == "cut":
                    relay.cut()
                else:
                    relay.frozen = True
                cut_at = time.monotonic()
                await asyncio.wait_for(cancelled.wait(), timeout=5)
                [stopped_at] = stopped
                assert pool.busy == 0
                job = await load_job(committed_database, account, job_id)
                assert (job.status, job.locked_by) == ("running", pool.name)
                # No other worker could have had it yet: the lease was still ours. The
                # transaction's now() is no earlier than asked_at, so this bounds the database's
                # time at the stop from above.
                assert stopped_at - cut_at < lease.total_seconds()
                assert job.locked_until is not None
                stopped_by = database_now + timedelta(seconds=stopped_at - asked_at)
                assert stopped_by < job.locked_until
        finally:
            await engine.dispose()


async def test_a_late_renewal_judges_only_the_jobs_it_was_asked_about(
    committed_database: Database,
    accounts: list[Account],
    database_urls: DatabaseUrls,
    owner_engine: AsyncEngine,
) -> None:
    """A renewal held up (here by a lock on its job's row) is waited for again; a job claimed
    meanwhile is not in its answer, and was taken for lost and stopped."""
    account = accounts[0]
    kind = new_kind()
    started: list[uuid.UUID] = []
    cancelled: list[uuid.UUID] = []

    async def handler(ctx: JobContext) -> None:
        started.append(ctx.job.id)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(ctx.job.id)
            raise

    async with running_pool(
        committed_database, database_urls, {kind: handler}, lease=timedelta(seconds=6)
    ) as pool:
        [first] = await enqueue_jobs(committed_database, account, kind)
        await wait_until(lambda: _true(len(started) == 1))
        async with owner_engine.connect() as holder:
            transaction = await holder.begin()
            await holder.execute(
                text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"), {"id": first}
            )
            await until_waiting_for_locks(owner_engine, 1)  # the renewal, held
            await enqueue_jobs(committed_database, account, kind)
            await wait_until(lambda: _true(len(started) == 2))
            # Renewals come every 2 s, or 0.5 s after one fails: the next round, which holds
            # both jobs, waits for the same renewal, which then answers.
            await asyncio.sleep(1.6)
            await transaction.rollback()
        await asyncio.sleep(1.0)  # the held renewal's answer, judged
        assert cancelled == [] and pool.busy == 2


async def _true(value: bool) -> bool:
    return value


def _waiting_job() -> tuple[Handler, asyncio.Event, asyncio.Event]:
    """A handler that waits 30 s; whether it has started, and whether it was cancelled."""
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    return handler, started, cancelled
