"""Upgrading a database whose queue still holds `run.start` jobs (queued before POST /runs
queued a run's chunks itself): they become the `run.chunk` jobs the engine runs."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from database.migrate import migrate
from database.setup import DatabaseUrls
from tests.scratch import A_RUNS_OWNERS

BEFORE = "0005_set_revisions"


@pytest.fixture
async def old_database(
    database_urls: DatabaseUrls, owner_engine: AsyncEngine
) -> AsyncIterator[AsyncEngine]:
    """A database of its own, migrated up to the revision before the rewrite."""
    name = f"assay_upgrade_{uuid.uuid4().hex[:8]}"
    async with owner_engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    owner_url = make_url(database_urls.owner).set(database=name)
    url = owner_url.render_as_string(hide_password=False)
    await migrate(url, database_urls.runtime_role, revision=BEFORE)
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        yield engine
    finally:
        await engine.dispose()
        async with owner_engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


async def _run_with_start_job(
    engine: AsyncEngine, *, total: int, repetitions: int, case_positions: list[int] | None
) -> uuid.UUID:
    ids = {key: uuid.uuid4() for key in ("org", "project", "set", "version", "run", "job")}
    async with engine.begin() as connection:
        for statement in (
            *A_RUNS_OWNERS,
            "INSERT INTO runs (id, organization_id, project_id, test_set_id,"
            " test_set_version_id, metrics, case_positions, concurrency, repetitions, use_cache,"
            " status, total) VALUES (:run, :org, :project, :set, :version, '[]',"
            " CAST(:positions AS JSONB), 10, :repetitions, false, 'queued', :total)",
            "INSERT INTO jobs (id, organization_id, kind, payload, status, attempts,"
            " max_attempts) VALUES (:job, :org, 'run.start',"
            " jsonb_build_object('run_id', CAST(:run_text AS TEXT)), 'queued', 0, 5)",
        ):
            await connection.execute(
                text(statement),
                {
                    **ids,
                    "run_text": str(ids["run"]),
                    "positions": None if case_positions is None else json.dumps(case_positions),
                    "repetitions": repetitions,
                    "total": total,
                },
            )
    return ids["run"]


def _expected_chunks(positions: list[int], repetitions: int) -> list[list[int]]:
    """How POST /runs splits a run today (results.service.enqueue_chunks, default size)."""
    size = max(1, 500 // repetitions)
    return [positions[i : i + size] for i in range(0, len(positions), size)]


async def test_queued_run_starts_become_the_chunk_jobs_of_their_runs(old_database):
    whole = await _run_with_start_job(old_database, total=1200, repetitions=2, case_positions=None)
    rerun = await _run_with_start_job(
        old_database, total=3, repetitions=1, case_positions=[3, 7, 9]
    )
    listing_none = await _run_with_start_job(
        old_database, total=4, repetitions=1, case_positions=[]
    )

    await migrate(old_database.url.render_as_string(hide_password=False), None)

    async with old_database.connect() as connection:
        jobs = (
            await connection.execute(
                text("SELECT kind, status, payload, idempotency_key FROM jobs ORDER BY kind")
            )
        ).all()
    starts = [job for job in jobs if job.kind == "run.start"]
    assert [job.status for job in starts] == ["done", "done", "done"]
    for run_id, positions, repetitions in (
        (whole, list(range(600)), 2),
        (rerun, [3, 7, 9], 1),
        (listing_none, [0, 1, 2, 3], 1),
    ):
        chunks = sorted(
            (
                job
                for job in jobs
                if job.kind == "run.chunk" and job.payload["run_id"] == str(run_id)
            ),
            key=lambda job: job.payload["positions"][0],
        )
        expected = _expected_chunks(positions, repetitions)
        assert [job.payload["positions"] for job in chunks] == expected
        assert {job.payload["chunks"] for job in chunks} == {len(expected)}
        assert {job.status for job in chunks} == {"queued"}
        assert sorted(job.idempotency_key for job in chunks) == sorted(
            f"run:{run_id}:chunk:{index}" for index in range(len(expected))
        )
