"""A release takes back only what its claim counted (an attempt, or a takeover), and whether
others' jobs wait is answered only for the organization of the transaction's tenant."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, update

from database.core import Database
from tasks import queue
from tasks.models import Job
from tests.helpers import Account, tenant_session
from tests.tasks.conftest import enqueue_jobs, load_job, new_kind
from tests.tasks.test_queue import LEASE, _claim_when_free, claim, make_due

SHORT = timedelta(seconds=0.2)


async def _release(database: Database, worker: str, job: queue.ClaimedJob) -> None:
    async with database.transaction() as session:
        await queue.release(session, worker=worker, job_ids=[job.id])


async def test_a_release_after_a_takeover_keeps_the_attempts_failures_counted(
    committed_database: Database, accounts: list[Account]
) -> None:
    account = accounts[0]
    [job_id] = await enqueue_jobs(committed_database, account, new_kind())
    [first] = await claim(committed_database, "worker-a")
    async with tenant_session(committed_database, account.organization_id) as session:
        assert await queue.fail(session, worker="worker-a", job=first, error="boom") == "queued"
    await make_due(committed_database, account, job_id)
    [second] = await claim(committed_database, "worker-a", lease=SHORT)
    assert (second.attempts, second.takeovers) == (2, 0)
    [taken_over] = await _claim_when_free(committed_database, "worker-b", LEASE)
    assert (taken_over.attempts, taken_over.takeovers) == (2, 1)

    await _release(committed_database, "worker-b", taken_over)
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.attempts, job.takeovers) == ("queued", 2, 0)

    # A claim that counted an attempt gives the attempt back.
    [third] = await claim(committed_database, "worker-c")
    assert (third.attempts, third.takeovers) == (3, 0)
    await _release(committed_database, "worker-c", third)
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.attempts, job.takeovers) == ("queued", 2, 0)


async def test_others_waiting_answers_only_for_the_tenants_organization(
    committed_database: Database, accounts: list[Account]
) -> None:
    mine, theirs = accounts
    kind = new_kind()
    held = await enqueue_jobs(committed_database, mine, kind, 2)
    async with tenant_session(committed_database, mine.organization_id) as session:
        await session.execute(
            update(Job)
            .where(Job.id.in_(held))
            .values(status="running", locked_by="w", locked_until=func.now() + LEASE)
        )
    [queued] = await enqueue_jobs(committed_database, theirs, kind)
    async with tenant_session(committed_database, theirs.organization_id) as session:
        await session.execute(
            update(Job).where(Job.id == queued).values(run_after=func.now() - timedelta(seconds=5))
        )

    async def asks(tenant: Account | None) -> bool:
        context = (
            committed_database.transaction()
            if tenant is None
            else tenant_session(committed_database, tenant.organization_id)
        )
        async with context as session:
            return await queue.others_waiting(
                session, organization_id=mine.organization_id, waited=1.0, kinds=[kind]
            )

    assert await asks(mine)
    assert not await asks(theirs)
    assert not await asks(None)
    async with tenant_session(committed_database, mine.organization_id) as session:
        await session.execute(update(Job).where(Job.id.in_(held)).values(status="done"))
