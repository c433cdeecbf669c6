"""The job queue crosses connections (enqueue, NOTIFY, claim, lease), so these tests commit for
real: each gets two fresh organizations, removed (with their jobs) at the end.

`assay_queue_claim` claims any claimable job in the database, so every test starts by checking
that no other test left one behind, and asserts only on the jobs it created itself."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from database.core import Database
from tasks import queue
from tasks.models import Job
from tests.helpers import Account, register, remove_account, tenant_session


def new_kind() -> str:
    """A job kind no other test uses."""
    return f"test.{uuid.uuid4().hex}"


async def enqueue_jobs(
    database: Database, account: Account, kind: str, count: int = 1, **options: Any
) -> list[uuid.UUID]:
    """`count` jobs of `kind` for the account's organization, committed."""
    ids: list[uuid.UUID] = []
    async with tenant_session(database, account.organization_id) as session:
        for number in range(count):
            job_id = await queue.enqueue(
                session,
                organization_id=account.organization_id,
                kind=kind,
                payload={"n": number},
                **options,
            )
            assert job_id is not None
            ids.append(job_id)
    return ids


async def load_job(database: Database, account: Account, job_id: uuid.UUID) -> Job:
    """The job as its own organization sees it (row-level security applies)."""
    async with tenant_session(database, account.organization_id) as session:
        job = await queue.get_job(session, job_id)
    assert job is not None, f"job {job_id} not found"
    return job


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, within: float = 5.0, interval: float = 0.02
) -> float:
    """Waits for `condition` to hold; returns the seconds it took. Fails after `within` s."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < within, f"still waiting after {within} s"
        await asyncio.sleep(interval)
    return time.monotonic() - started


async def wait_for_status(
    database: Database,
    account: Account,
    job_ids: Iterable[uuid.UUID],
    status: str,
    *,
    within: float = 5.0,
) -> None:
    ids = list(job_ids)

    async def reached() -> bool:
        for job_id in ids:
            if (await load_job(database, account, job_id)).status != status:
                return False
        return True

    await wait_until(reached, within=within, interval=0.05)


async def claimable_jobs(owner_engine: AsyncEngine) -> list[tuple[Any, ...]]:
    """Jobs anywhere in the database that a claim could take (now or once a lease runs out)."""
    async with owner_engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, organization_id, kind, status FROM jobs"
                " WHERE status IN ('queued', 'running')"
            )
        )
        return [tuple(row) for row in rows]


@pytest.fixture
async def accounts(
    committed_database: Database, app: Any, owner_engine: AsyncEngine
) -> AsyncIterator[list[Account]]:
    """Two committed organizations (jobs need one: a foreign key), deleted afterwards."""
    leftovers = await claimable_jobs(owner_engine)
    assert leftovers == [], f"another test left claimable jobs behind: {leftovers}"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as client:
        created = [await register(client), await register(client)]
    try:
        yield created
    finally:
        for account in created:
            await remove_account(owner_engine, account)
        # Jobs cascade with their organization: nothing claimable stays behind.
        assert await claimable_jobs(owner_engine) == []
