"""A job that gives up is recorded dead whatever its `on_dead` does, and whatever its error's
text holds: else it stays running, is taken over once its lease runs out (no attempt counted)
and runs again past its last attempt, every lease. An `on_dead` that fails is tried again
first: a run it ends would otherwise stay running."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from database.core import Database
from database.setup import DatabaseUrls
from tasks import queue, worker
from tasks.worker import ON_DEAD_TRIES, JobContext
from tests.helpers import Account
from tests.tasks.conftest import enqueue_jobs, load_job, new_kind, wait_for_status
from tests.tasks.test_worker import running_pool


async def test_a_failing_on_dead_still_leaves_the_job_dead_after_its_attempts(
    committed_database: Database,
    accounts: list[Account],
    database_urls: DatabaseUrls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = accounts[0]
    kind = new_kind()
    monkeypatch.setattr(queue, "backoff", lambda attempts: 0.05)
    monkeypatch.setattr(worker, "ON_DEAD_PAUSE", 0.01)
    runs: list[int] = []
    told: list[str] = []

    async def handler(ctx: JobContext) -> None:
        runs.append(ctx.job.attempts)
        raise ValueError(f"boom {ctx.job.attempts}")

    async def on_dead(ctx: JobContext, session: AsyncSession, error: str) -> None:
        told.append(error)
        raise RuntimeError("the run could not be ended")

    lease = timedelta(seconds=1)
    async with running_pool(
        committed_database,
        database_urls,
        {kind: handler},
        poll_seconds=0.1,
        lease=lease,
        on_dead=on_dead,
    ):
        [job_id] = await enqueue_jobs(committed_database, account, kind, max_attempts=2)
        await wait_for_status(committed_database, account, [job_id], "dead", within=10)
        await asyncio.sleep(lease.total_seconds() * 2)  # a lease left running would run out

    assert runs == [1, 2]
    assert told == ["ValueError: boom 2"] * ON_DEAD_TRIES
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.attempts, job.takeovers) == ("dead", 2, 0)
    assert job.locked_by is None and job.finished_at is not None
    assert job.last_error == (
        "on_dead failed (RuntimeError: the run could not be ended) after: ValueError: boom 2"
    )


async def test_an_error_holding_a_nul_is_recorded_storable(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    account = accounts[0]
    kind = new_kind()
    told: list[str] = []

    async def handler(ctx: JobContext) -> None:
        raise ValueError("bad\x00byte")

    async def on_dead(ctx: JobContext, session: AsyncSession, error: str) -> None:
        told.append(error)

    async with running_pool(committed_database, database_urls, {kind: handler}, on_dead=on_dead):
        [job_id] = await enqueue_jobs(committed_database, account, kind, max_attempts=1)
        await wait_for_status(committed_database, account, [job_id], "dead")

    assert told == ["ValueError: bad\ufffdbyte"]
    job = await load_job(committed_database, account, job_id)
    assert job.last_error == "ValueError: bad\ufffdbyte"


async def test_an_on_dead_that_fails_once_is_tried_again_and_commits_with_the_job(
    committed_database: Database,
    accounts: list[Account],
    database_urls: DatabaseUrls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = accounts[0]
    kind = new_kind()
    monkeypatch.setattr(worker, "ON_DEAD_PAUSE", 0.01)
    told: list[str] = []

    async def handler(ctx: JobContext) -> None:
        raise ValueError("boom")

    async def on_dead(ctx: JobContext, session: AsyncSession, error: str) -> None:
        told.append(error)
        if len(told) == 1:
            raise RuntimeError("deadlock detected")

    async with running_pool(committed_database, database_urls, {kind: handler}, on_dead=on_dead):
        [job_id] = await enqueue_jobs(committed_database, account, kind, max_attempts=1)
        await wait_for_status(committed_database, account, [job_id], "dead")

    assert told == ["ValueError: boom", "ValueError: boom"]
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.last_error) == ("dead", "ValueError: boom")


async def test_a_failure_not_of_on_dead_is_not_blamed_on_it(
    committed_database: Database,
    accounts: list[Account],
    database_urls: DatabaseUrls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recording a retry fails (the database restarting, say): the job is left to its lease,
    never marked as if its on_dead had failed (it was not told)."""
    account = accounts[0]
    kind = new_kind()
    monkeypatch.setattr(queue, "backoff", lambda attempts: 0.05)
    monkeypatch.setattr(worker, "ON_DEAD_PAUSE", 0.01)
    record = queue.fail
    refusals = [RuntimeError("the database restarts")] * ON_DEAD_TRIES
    told: list[str] = []

    async def failing_at_first(session: AsyncSession, **arguments: object) -> str:
        if refusals:
            raise refusals.pop()
        return await record(session, **arguments)  # type: ignore[arg-type]

    async def handler(ctx: JobContext) -> None:
        raise ValueError(f"boom {ctx.job.attempts}")

    async def on_dead(ctx: JobContext, session: AsyncSession, error: str) -> None:
        told.append(error)

    monkeypatch.setattr(queue, "fail", failing_at_first)
    async with running_pool(
        committed_database,
        database_urls,
        {kind: handler},
        poll_seconds=0.1,
        lease=timedelta(seconds=1),
        on_dead=on_dead,
    ):
        [job_id] = await enqueue_jobs(committed_database, account, kind, max_attempts=1)
        await wait_for_status(committed_database, account, [job_id], "dead", within=15)

    job = await load_job(committed_database, account, job_id)
    assert told == ["ValueError: boom 1"]  # told once it could be recorded, never skipped
    assert job.last_error == "ValueError: boom 1"
