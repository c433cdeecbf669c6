"""A job that gives up is recorded dead whatever its `on_dead` does, and whatever its error's
text holds: else it stays running, is taken over once its lease runs out (no attempt counted)
and runs again past its last attempt, every lease."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from database.core import Database
from database.setup import DatabaseUrls
from tasks import queue
from tasks.worker import JobContext
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
    assert told == ["ValueError: boom 2"]
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
