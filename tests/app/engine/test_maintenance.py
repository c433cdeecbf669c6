"""The maintenance job: one per time slot however many processes start or retry at once, run by
the worker pool like any job, scheduling its next occurrence once; a process with workers
schedules it when it starts, an API-only process never does."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Row, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.engine.jobs import HANDLERS, on_dead
from app.engine.maintenance import (
    CATEGORIES,
    PRUNE_JOB,
    SYSTEM_TENANT,
    RetentionPolicy,
    ensure_scheduled,
    run_prune,
)
from database import embedded
from database.core import Database
from database.setup import DatabaseUrls
from tasks.models import Job
from tasks.queue import SYSTEM_ORGANIZATION_ID, ClaimedJob
from tasks.worker import JobContext, WorkerPool
from tests.e2e.servers import server_env, start_server, start_worker
from tests.tasks.conftest import wait_until
from utils.config import Settings
from utils.runtime import get_runtime

SystemJobs = Callable[[], Awaitable[list[Row[Any]]]]
_SYSTEM_JOBS = text(
    "SELECT id, kind, status, payload, idempotency_key, run_after FROM jobs"
    " WHERE organization_id = :system ORDER BY run_after"
)


async def _read_system_jobs(engine: AsyncEngine) -> list[Row[Any]]:
    async with engine.connect() as conn:
        return list((await conn.execute(_SYSTEM_JOBS, {"system": SYSTEM_ORGANIZATION_ID})).all())


@pytest.fixture
async def system_jobs(owner_engine: AsyncEngine) -> AsyncIterator[SystemJobs]:
    """The committed jobs of the system organization (none before the test, none left after:
    any worker pool of a later test would claim them)."""
    assert await _read_system_jobs(owner_engine) == []
    yield lambda: _read_system_jobs(owner_engine)
    async with owner_engine.begin() as conn:
        await conn.execute(
            text("DELETE FROM jobs WHERE organization_id = :system"),
            {"system": SYSTEM_ORGANIZATION_ID},
        )


async def _prune_jobs(database: Database) -> list[Job]:
    """The maintenance jobs, as the system organization sees them."""
    async with database.transaction(SYSTEM_TENANT) as session:
        found = await session.scalars(
            select(Job).where(Job.kind == PRUNE_JOB).order_by(Job.run_after)
        )
        return list(found.all())


async def test_an_occurrence_schedules_the_next_slot_once(database):
    interval = get_runtime().settings.maintenance_interval_seconds
    await ensure_scheduled(database, interval)
    await ensure_scheduled(database, interval)  # another process starting: nothing more
    [current] = await _prune_jobs(database)
    slot = current.payload["slot"]
    assert current.idempotency_key == f"maintenance.prune:{interval:g}s:{slot}"
    assert current.organization_id == SYSTEM_ORGANIZATION_ID

    job = ClaimedJob(
        id=current.id,
        organization_id=current.organization_id,
        kind=current.kind,
        payload=current.payload,
        attempts=1,
        max_attempts=current.max_attempts,
    )
    context = JobContext(job=job, database=database, worker="test")
    await run_prune(context)
    await run_prune(context)  # delivered again (at least once): still one next occurrence

    jobs = await _prune_jobs(database)
    assert [j.payload["slot"] for j in jobs] == [slot, slot + 1]
    following = jobs[1]
    assert following.status == "queued"
    assert following.idempotency_key == f"maintenance.prune:{interval:g}s:{slot + 1}"
    # It runs when its slot begins.
    begins = datetime.fromtimestamp((slot + 1) * interval, UTC)
    assert abs((following.run_after - begins).total_seconds()) < 0.001


async def test_processes_starting_at_once_schedule_one_job(committed_database, system_jobs):
    interval = 10.0**9  # one slot for the whole test, whenever it runs
    await asyncio.gather(*(ensure_scheduled(committed_database, interval) for _ in range(4)))

    jobs = await system_jobs()
    assert [(job.kind, job.status) for job in jobs] == [(PRUNE_JOB, "queued")]


async def test_the_worker_pool_runs_it_and_it_schedules_the_next(
    committed_database, system_jobs, database_urls
):
    interval = get_runtime().settings.maintenance_interval_seconds
    pool = WorkerPool(
        committed_database,
        HANDLERS,
        on_dead=on_dead,
        concurrency=1,
        listen_url=database_urls.runtime,
        poll_seconds=0.2,
    )
    await pool.start()
    try:
        await ensure_scheduled(committed_database, interval)

        async def done() -> bool:
            return [job.status for job in await system_jobs()] == ["done", "queued"]

        await wait_until(done, within=15)
    finally:
        await pool.stop(drain_seconds=2)

    current, following = await system_jobs()
    assert following.payload["slot"] == current.payload["slot"] + 1
    assert following.run_after > datetime.now(UTC)


def test_the_policy_takes_each_period_from_its_setting():
    settings = Settings(
        retention_run_events_days="1",
        retention_jobs_days="2",
        retention_dead_jobs_days="3",
        retention_sessions_days="4",
        retention_invitations_days="5",
        retention_response_cache_days="6",
    )
    assert RetentionPolicy.from_settings(settings) == RetentionPolicy(1, 2, 3, 4, 5, 6)
    kept = Settings(retention_response_cache_days="off", retention_jobs_days="off")
    assert RetentionPolicy.from_settings(kept) == RetentionPolicy(30, None, 30, 7, 30, None)


# --- processes ------------------------------------------------------------------------------


async def _fresh_database(urls: DatabaseUrls) -> tuple[str, str, str]:
    """A database of its own on the test server: (runtime URL, owner URL, name)."""
    socket_dir = Path(make_url(urls.owner).query["host"])  # type: ignore[arg-type]
    name = f"assay_maint_{uuid.uuid4().hex[:8]}"
    await embedded.ensure_database(embedded.EmbeddedServer(socket_dir), name)
    plain = f"postgresql://{{role}}@/{name}?host={socket_dir}"
    return plain.format(role=embedded.RUNTIME_ROLE), plain.format(role=embedded.OWNER_ROLE), name


@pytest.mark.slow
async def test_a_process_with_workers_schedules_it_and_one_without_never_does(
    database_urls, owner_engine, tmp_path
):
    runtime_url, owner_url, name = await _fresh_database(database_urls)
    env = server_env(
        tmp_path / "data",
        ASSAY_DATABASE_URL=runtime_url,
        ASSAY_MIGRATION_DATABASE_URL=owner_url,
        ASSAY_SECRET_KEY="production-secret-key-for-the-maintenance-test-0123",
        ASSAY_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
    )
    engine = create_async_engine(
        make_url(owner_url).set(drivername="postgresql+asyncpg"), poolclass=NullPool
    )
    try:
        api_only = start_server({**env, "ASSAY_WORKERS": "0"}, tmp_path / "api.log")
        try:
            await asyncio.to_thread(api_only.wait_healthy)  # started up: it would have by now
            assert await _read_system_jobs(engine) == []
        finally:
            api_only.stop()

        workers = [
            start_worker({**env, "ASSAY_WORKERS": "1"}, tmp_path / f"worker-{n}.log")
            for n in range(2)
        ]
        try:

            async def pruned_once() -> bool:
                return [job.status for job in await _read_system_jobs(engine)] == [
                    "done",
                    "queued",
                ]

            await wait_until(pruned_once, within=60, interval=0.2)
        finally:
            for process in workers:
                process.terminate()
            for process in workers:
                await asyncio.to_thread(process.wait, 30)

        # Two processes started at once: one job for the slot, run by one of them.
        current, following = await _read_system_jobs(engine)
        assert following.payload["slot"] == current.payload["slot"] + 1
        logs = [(tmp_path / f"worker-{n}.log").read_text() for n in range(2)]
        assert sum(log.count('"retention pruned"') for log in logs) == 1
        # The line counts every category, the delivery log included.
        [pruned] = [
            json.loads(line)
            for log in logs
            for line in log.splitlines()
            if '"retention pruned"' in line
        ]
        assert set(CATEGORIES) <= pruned.keys()
        assert pruned["rounds"] == 1 and not pruned["stopped_for_another_process"]
        assert "retention pruned" not in (tmp_path / "api.log").read_text()
    finally:
        await engine.dispose()
        async with owner_engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
