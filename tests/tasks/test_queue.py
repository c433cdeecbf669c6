"""The job queue against a real database: enqueue in the caller's transaction, NOTIFY at commit,
claims with SKIP LOCKED, leases and heartbeats, retries with backoff, dead jobs, and RLS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from database.core import Database, asyncpg_connect_args
from database.setup import DatabaseUrls
from tasks import queue
from tasks.models import Job
from tests.helpers import Account, register, remove_account, tenant_session
from tests.tasks.conftest import enqueue_jobs, load_job, new_kind

LEASE = timedelta(seconds=60)


class Rollback(Exception):
    """Raised to roll a transaction back."""


def mine(claimed: list[queue.ClaimedJob], ids: set[uuid.UUID]) -> list[queue.ClaimedJob]:
    return [job for job in claimed if job.id in ids]


async def claim(
    database: Database, worker: str, *, limit: int = 100, lease: timedelta = LEASE
) -> list[queue.ClaimedJob]:
    """One committed claim, as a worker makes it (no tenant set)."""
    async with database.transaction() as session:
        return await queue.claim(session, worker=worker, limit=limit, lease=lease)


async def seconds_until(
    database: Database, account: Account, job_id: uuid.UUID, column: str
) -> float:
    """`column` (a timestamp) minus the database's now(), in seconds."""
    async with tenant_session(database, account.organization_id) as session:
        value = await session.scalar(
            text(f"SELECT extract(epoch FROM {column} - now()) FROM jobs WHERE id = :id"),
            {"id": job_id},
        )
    assert value is not None
    return float(value)


async def make_due(database: Database, account: Account, job_id: uuid.UUID) -> None:
    """Skips the backoff: the job may be claimed again at once."""
    async with tenant_session(database, account.organization_id) as session:
        await session.execute(update(Job).where(Job.id == job_id).values(run_after=func.now()))


async def count_of_kind(database: Database, account: Account, kind: str) -> int:
    async with tenant_session(database, account.organization_id) as session:
        return int(
            await session.scalar(select(func.count()).select_from(Job).where(Job.kind == kind)) or 0
        )


# --- enqueue ----------------------------------------------------------------------------------


async def test_an_enqueue_rolled_back_with_its_transaction_leaves_no_job(
    committed_database: Database, accounts: list[Account]
) -> None:
    account = accounts[0]
    kind = new_kind()
    job_id = None
    with pytest.raises(Rollback):
        async with tenant_session(committed_database, account.organization_id) as session:
            job_id = await queue.enqueue(
                session, organization_id=account.organization_id, kind=kind, payload={}
            )
            assert job_id is not None
            # Visible inside the caller's own transaction...
            assert await queue.get_job(session, job_id) is not None
            raise Rollback
    assert job_id is not None
    # ...and gone with it.
    async with tenant_session(committed_database, account.organization_id) as session:
        assert await queue.get_job(session, job_id) is None
    assert await count_of_kind(committed_database, account, kind) == 0


async def test_a_committed_enqueue_is_visible_to_other_connections(
    committed_database: Database, accounts: list[Account]
) -> None:
    account = accounts[0]
    kind = new_kind()
    async with tenant_session(committed_database, account.organization_id) as session:
        job_id = await queue.enqueue(
            session,
            organization_id=account.organization_id,
            kind=kind,
            payload={"run_id": "r-1"},
            max_attempts=7,
        )
    assert job_id is not None
    job = await load_job(committed_database, account, job_id)
    assert (job.organization_id, job.kind, job.payload) == (
        account.organization_id,
        kind,
        {"run_id": "r-1"},
    )
    assert (job.status, job.attempts, job.max_attempts) == ("queued", 0, 7)
    assert job.locked_by is None and job.locked_until is None and job.last_error is None
    assert await seconds_until(committed_database, account, job_id, "run_after") <= 0


async def test_an_idempotency_key_admits_one_job_only(
    committed_database: Database, accounts: list[Account]
) -> None:
    account = accounts[0]
    kind = new_kind()
    key = f"test-key-{uuid.uuid4().hex}"
    [first] = await enqueue_jobs(committed_database, account, kind, idempotency_key=key)
    async with tenant_session(committed_database, account.organization_id) as session:
        second = await queue.enqueue(
            session,
            organization_id=account.organization_id,
            kind=kind,
            payload={"again": True},
            idempotency_key=key,
        )
    assert second is None
    assert await count_of_kind(committed_database, account, kind) == 1
    assert (await load_job(committed_database, account, first)).payload == {"n": 0}
    # Without a key, nothing is deduplicated.
    await enqueue_jobs(committed_database, account, kind, 2)
    assert await count_of_kind(committed_database, account, kind) == 3


async def test_enqueue_many_adds_all_at_once_and_skips_used_keys(
    committed_database: Database, accounts: list[Account]
) -> None:
    """A run's chunks go in as one statement: every job is added but one whose key is used
    already, and a repeat of the whole batch adds nothing."""
    account = accounts[0]
    kind = new_kind()
    prefix = f"batch-{uuid.uuid4().hex}-"
    await enqueue_jobs(committed_database, account, kind, idempotency_key=prefix + "1")
    jobs = [({"n": n}, f"{prefix}{n}") for n in range(4)]

    async def enqueue_batch() -> list[uuid.UUID]:
        async with tenant_session(committed_database, account.organization_id) as session:
            return await queue.enqueue_many(
                session, organization_id=account.organization_id, kind=kind, jobs=jobs
            )

    added = await enqueue_batch()
    payloads = [(await load_job(committed_database, account, job_id)).payload for job_id in added]
    assert sorted(p["n"] for p in payloads) == [0, 2, 3]
    assert await enqueue_batch() == []
    assert await count_of_kind(committed_database, account, kind) == 4


async def test_enqueue_cannot_write_into_another_organization(
    committed_database: Database, accounts: list[Account]
) -> None:
    first, second = accounts
    kind = new_kind()
    with pytest.raises(DBAPIError) as refused:
        async with tenant_session(committed_database, first.organization_id) as session:
            await queue.enqueue(
                session, organization_id=second.organization_id, kind=kind, payload={}
            )
    assert isinstance(refused.value.orig, Exception)
    assert "row-level security" in str(refused.value)
    assert await count_of_kind(committed_database, second, kind) == 0


# --- NOTIFY -----------------------------------------------------------------------------------


@pytest.fixture
async def notifications(database_urls: DatabaseUrls) -> AsyncIterator[asyncio.Queue[str]]:
    """Payloads arriving on the queue's channel, on a plain LISTEN connection."""
    received: asyncio.Queue[str] = asyncio.Queue()
    connection = await asyncpg.connect(**asyncpg_connect_args(database_urls.runtime))
    try:
        await connection.add_listener(
            queue.CHANNEL, lambda _conn, _pid, _channel, payload: received.put_nowait(payload)
        )
        yield received
    finally:
        await connection.close(timeout=5)


async def test_notify_carries_the_id_and_only_after_commit(
    committed_database: Database, accounts: list[Account], notifications: asyncio.Queue[str]
) -> None:
    account = accounts[0]
    kind = new_kind()
    key = f"test-key-{uuid.uuid4().hex}"

    with pytest.raises(Rollback):
        async with tenant_session(committed_database, account.organization_id) as session:
            rolled_back = await queue.enqueue(
                session, organization_id=account.organization_id, kind=kind, payload={}
            )
            raise Rollback

    async with tenant_session(committed_database, account.organization_id) as session:
        job_id = await queue.enqueue(
            session,
            organization_id=account.organization_id,
            kind=kind,
            payload={"secret": "never in the notification"},
            idempotency_key=key,
        )
        await asyncio.sleep(0.3)
        assert notifications.empty(), "notified before commit"
    assert job_id is not None and rolled_back is not None

    # Notifications arrive in commit order: the first is the committed job, by id alone.
    assert await asyncio.wait_for(notifications.get(), timeout=5) == str(job_id)

    # A duplicate (idempotency key) enqueues nothing and wakes no one either.
    async with tenant_session(committed_database, account.organization_id) as session:
        assert (
            await queue.enqueue(
                session,
                organization_id=account.organization_id,
                kind=kind,
                payload={},
                idempotency_key=key,
            )
            is None
        )
    await asyncio.sleep(0.3)
    assert notifications.empty()


# --- claim ------------------------------------------------------------------------------------


async def test_claim_marks_the_job_running_under_a_lease(
    committed_database: Database, accounts: list[Account]
) -> None:
    account = accounts[0]
    kind = new_kind()
    [job_id] = await enqueue_jobs(committed_database, account, kind, max_attempts=4)

    [claimed] = await claim(committed_database, "worker-a", lease=timedelta(seconds=45))
    assert claimed == queue.ClaimedJob(
        id=job_id,
        organization_id=account.organization_id,
        kind=kind,
        payload={"n": 0},
        attempts=1,
        max_attempts=4,
    )
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.locked_by, job.attempts) == ("running", "worker-a", 1)
    assert 40 < await seconds_until(committed_database, account, job_id, "locked_until") <= 45
    # Held: no one else gets it while the lease lasts.
    assert await claim(committed_database, "worker-b") == []


async def test_two_concurrent_claimers_skip_each_others_locked_jobs(
    committed_database: Database, accounts: list[Account]
) -> None:
    ids = set(await enqueue_jobs(committed_database, accounts[0], new_kind(), 6))
    async with (
        committed_database.transaction() as first,
        committed_database.transaction() as second,
    ):
        got_first = await queue.claim(first, worker="worker-a", limit=3, lease=LEASE)
        # The first claimer's transaction is still open, its rows locked: the second must skip
        # them rather than wait (a lock timeout turns waiting into a failure, not a hang).
        await second.execute(text("SET LOCAL lock_timeout = '2s'"))
        got_second = await queue.claim(second, worker="worker-b", limit=10, lease=LEASE)
    first_ids = {job.id for job in mine(got_first, ids)}
    second_ids = {job.id for job in mine(got_second, ids)}
    assert len(first_ids) == 3
    assert first_ids.isdisjoint(second_ids)
    assert first_ids | second_ids == ids


async def test_many_claimers_at_once_share_out_every_job_exactly_once(
    committed_database: Database, accounts: list[Account]
) -> None:
    ids = set(await enqueue_jobs(committed_database, accounts[0], new_kind(), 12))
    ids |= set(await enqueue_jobs(committed_database, accounts[1], new_kind(), 12))

    async def claimer(name: str) -> list[uuid.UUID]:
        taken: list[uuid.UUID] = []
        while batch := mine(await claim(committed_database, name, limit=2), ids):
            taken.extend(job.id for job in batch)
            await asyncio.sleep(0)
        return taken

    results = await asyncio.wait_for(
        asyncio.gather(*(claimer(f"worker-{n}") for n in range(5))), timeout=20
    )
    everything = [job_id for taken in results for job_id in taken]
    assert len(everything) == len(set(everything)), "a job was claimed twice"
    assert set(everything) == ids
    assert sum(1 for taken in results if taken) > 1, "the claimers did not run side by side"


async def test_claim_respects_the_limit(
    committed_database: Database, accounts: list[Account]
) -> None:
    ids = set(await enqueue_jobs(committed_database, accounts[0], new_kind(), 5))
    first = await claim(committed_database, "worker-a", limit=2)
    assert len(first) == 2 and {job.id for job in first} <= ids
    second = await claim(committed_database, "worker-a", limit=2)
    assert len(second) == 2
    rest = await claim(committed_database, "worker-a", limit=10)
    assert {job.id for job in first + second + rest} == ids
    assert len(rest) == 1


async def test_a_job_due_in_the_future_is_not_claimed(
    committed_database: Database, accounts: list[Account]
) -> None:
    account = accounts[0]
    kind = new_kind()
    [later] = await enqueue_jobs(committed_database, account, kind, delay=timedelta(seconds=60))
    [now] = await enqueue_jobs(committed_database, account, kind)
    assert 55 < await seconds_until(committed_database, account, later, "run_after") <= 60

    claimed = await claim(committed_database, "worker-a")
    assert [job.id for job in claimed] == [now]
    job = await load_job(committed_database, account, later)
    assert (job.status, job.attempts, job.locked_by) == ("queued", 0, None)


async def test_a_takeover_from_a_dead_worker_is_not_an_attempt(
    committed_database: Database, accounts: list[Account]
) -> None:
    """Work whose process died did not fail: a takeover is counted apart from the attempts,
    which count only the runs whose handler raised."""
    account = accounts[0]
    [job_id] = await enqueue_jobs(committed_database, account, new_kind())
    short = timedelta(seconds=0.2)
    for takeover in (0, 1, 2):
        [claimed] = await _claim_when_free(committed_database, f"worker-{takeover}", short)
        assert (claimed.id, claimed.attempts, claimed.takeovers) == (job_id, 1, takeover)
        job = await load_job(committed_database, account, job_id)
        assert (job.attempts, job.takeovers) == (1, takeover)
    # A failure of the handler is an attempt: the next claim counts it.
    async with tenant_session(committed_database, account.organization_id) as session:
        assert await queue.fail(session, worker="worker-2", job=claimed, error="boom") == "queued"
    async with tenant_session(committed_database, account.organization_id) as session:
        await session.execute(update(Job).where(Job.id == job_id).values(run_after=func.now()))
    [retried] = await _claim_when_free(committed_database, "worker-3", short)
    assert (retried.attempts, retried.takeovers) == (2, 2)


async def test_a_job_whose_processes_keep_dying_is_given_up_after_its_takeovers(
    committed_database: Database, accounts: list[Account]
) -> None:
    account = accounts[0]
    [job_id] = await enqueue_jobs(committed_database, account, new_kind())
    async with tenant_session(committed_database, account.organization_id) as session:
        await session.execute(update(Job).where(Job.id == job_id).values(max_takeovers=2))
    short = timedelta(seconds=0.2)
    for _ in range(4):
        [claimed] = await _claim_when_free(committed_database, "worker", short)
    assert claimed.takeovers == 3
    assert claimed.exhausted == "gave up: the processes running it died 3 times"
    async with tenant_session(committed_database, account.organization_id) as session:
        assert await queue.fail(session, worker="worker", job=claimed, error="x") == "dead"


async def _claim_when_free(
    database: Database, worker: str, lease: timedelta
) -> list[queue.ClaimedJob]:
    for _ in range(100):
        if claimed := await claim(database, worker, lease=lease):
            return claimed
        await asyncio.sleep(0.05)
    raise AssertionError("the job never became claimable")


# --- leases, heartbeat, release ---------------------------------------------------------------


async def test_an_expired_lease_makes_the_job_claimable_by_another_worker(
    committed_database: Database, accounts: list[Account]
) -> None:
    account = accounts[0]
    [job_id] = await enqueue_jobs(committed_database, account, new_kind())
    [claimed] = await claim(committed_database, "worker-dead", lease=timedelta(seconds=1))
    assert claimed.id == job_id
    assert await claim(committed_database, "worker-alive") == []  # the lease still holds

    await asyncio.sleep(1.2)
    [again] = await claim(committed_database, "worker-alive", lease=LEASE)
    assert (again.id, again.attempts, again.takeovers) == (job_id, 1, 1)
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.locked_by) == ("running", "worker-alive")

    # The first worker has lost it: its heartbeat, completion and failure change nothing.
    async with committed_database.transaction() as session:
        held = await queue.heartbeat(session, worker="worker-dead", job_ids=[job_id], lease=LEASE)
    assert held == set()
    async with tenant_session(committed_database, account.organization_id) as session:
        await queue.complete(session, worker="worker-dead", job_id=job_id)
        assert (
            await queue.fail(session, worker="worker-dead", job=claimed, error="too late") == "lost"
        )
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.locked_by, job.last_error) == ("running", "worker-alive", None)


async def test_heartbeat_extends_only_the_named_workers_leases(
    committed_database: Database, accounts: list[Account]
) -> None:
    account = accounts[0]
    ids = await enqueue_jobs(committed_database, account, new_kind(), 3)
    short = timedelta(seconds=5)
    [a1, a2] = await claim(committed_database, "worker-a", limit=2, lease=short)
    [b1] = await claim(committed_database, "worker-b", limit=1, lease=short)
    assert {a1.id, a2.id, b1.id} == set(ids)
    never_claimed = uuid.uuid4()

    async with committed_database.transaction() as session:
        held = await queue.heartbeat(
            session,
            worker="worker-a",
            job_ids=[a1.id, a2.id, b1.id, never_claimed],
            lease=timedelta(seconds=120),
        )
    assert held == {a1.id, a2.id}
    for job_id in (a1.id, a2.id):
        assert await seconds_until(committed_database, account, job_id, "locked_until") > 115
    assert await seconds_until(committed_database, account, b1.id, "locked_until") <= 5
    assert (await load_job(committed_database, account, b1.id)).locked_by == "worker-b"

    # A finished job is no longer held either.
    async with tenant_session(committed_database, account.organization_id) as session:
        await queue.complete(session, worker="worker-a", job_id=a1.id)
    async with committed_database.transaction() as session:
        held = await queue.heartbeat(
            session, worker="worker-a", job_ids=[a1.id, a2.id], lease=LEASE
        )
    assert held == {a2.id}


async def test_release_hands_jobs_back_with_their_attempt_restored(
    committed_database: Database, accounts: list[Account]
) -> None:
    account = accounts[0]
    ids = await enqueue_jobs(committed_database, account, new_kind(), 2)
    claimed = await claim(committed_database, "worker-a")
    assert {job.id for job in claimed} == set(ids)

    # Only the holder can hand a job back.
    async with committed_database.transaction() as session:
        await queue.release(session, worker="worker-b", job_ids=ids)
    assert (await load_job(committed_database, account, ids[0])).status == "running"

    async with committed_database.transaction() as session:
        await queue.release(session, worker="worker-a", job_ids=[ids[0]])
    released = await load_job(committed_database, account, ids[0])
    assert (released.status, released.attempts) == ("queued", 0)
    assert released.locked_by is None and released.locked_until is None
    assert await seconds_until(committed_database, account, ids[0], "run_after") <= 0
    kept = await load_job(committed_database, account, ids[1])
    assert (kept.status, kept.attempts, kept.locked_by) == ("running", 1, "worker-a")

    # Claimable again at once, and the handed-back attempt was not counted.
    [again] = await claim(committed_database, "worker-b")
    assert (again.id, again.attempts) == (ids[0], 1)


async def test_complete_marks_done_only_for_the_holder(
    committed_database: Database, accounts: list[Account]
) -> None:
    account = accounts[0]
    [job_id] = await enqueue_jobs(committed_database, account, new_kind())
    await claim(committed_database, "worker-a")
    async with tenant_session(committed_database, account.organization_id) as session:
        await queue.complete(session, worker="worker-b", job_id=job_id)
    assert (await load_job(committed_database, account, job_id)).status == "running"
    async with tenant_session(committed_database, account.organization_id) as session:
        await queue.complete(session, worker="worker-a", job_id=job_id)
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.locked_by, job.locked_until) == ("done", None, None)
    assert job.finished_at is not None
    assert await claim(committed_database, "worker-b") == []


# --- failure, backoff, dead -------------------------------------------------------------------


def test_backoff_doubles_per_attempt_up_to_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue.random, "uniform", lambda low, high: 1.0)  # no jitter
    base = queue.BACKOFF_BASE_SECONDS
    assert [queue.backoff(n) for n in range(1, 7)] == [base * 2**k for k in range(6)]
    assert queue.backoff(0) == base
    assert queue.backoff(50) == queue.BACKOFF_MAX_SECONDS
    assert queue.backoff(10_000) == queue.BACKOFF_MAX_SECONDS


def test_backoff_has_jitter_around_the_ideal_delay() -> None:
    for attempts, ideal in ((1, 1.0), (3, 4.0), (30, queue.BACKOFF_MAX_SECONDS)):
        samples = [queue.backoff(attempts) for _ in range(300)]
        assert all(0.5 * ideal <= s <= 1.5 * ideal for s in samples)
        assert len(set(samples)) > 250, "no jitter: herds would retry in step"
        assert min(samples) < 0.8 * ideal and max(samples) > 1.2 * ideal
    # With jitter, later attempts still wait longer on the whole.
    means = [sum(queue.backoff(n) for _ in range(300)) / 300 for n in range(1, 6)]
    assert means == sorted(means)


async def test_a_failed_job_is_retried_later_with_its_error(
    committed_database: Database, accounts: list[Account], monkeypatch: pytest.MonkeyPatch
) -> None:
    account = accounts[0]
    [job_id] = await enqueue_jobs(committed_database, account, new_kind(), max_attempts=3)
    [claimed] = await claim(committed_database, "worker-a")
    monkeypatch.setattr(queue, "backoff", lambda attempts: 30.0 * attempts)
    async with tenant_session(committed_database, account.organization_id) as session:
        status = await queue.fail(session, worker="worker-a", job=claimed, error="E" * 5000)
    assert status == "queued"
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.attempts, job.locked_by, job.locked_until) == ("queued", 1, None, None)
    assert job.last_error == "E" * 4000
    assert job.finished_at is None
    assert 25 < await seconds_until(committed_database, account, job_id, "run_after") <= 30
    assert await claim(committed_database, "worker-b") == []  # not before its time

    await make_due(committed_database, account, job_id)
    [second] = await claim(committed_database, "worker-b")
    assert (second.id, second.attempts) == (job_id, 2)
    async with tenant_session(committed_database, account.organization_id) as session:
        assert await queue.fail(session, worker="worker-b", job=second, error="later") == "queued"
    # The delay grows with the attempts.
    assert 55 < await seconds_until(committed_database, account, job_id, "run_after") <= 60


async def test_after_its_last_attempt_a_job_is_dead_with_its_last_error(
    committed_database: Database, accounts: list[Account]
) -> None:
    account = accounts[0]
    [job_id] = await enqueue_jobs(committed_database, account, new_kind(), max_attempts=2)
    statuses = []
    for attempt in (1, 2):
        [claimed] = await claim(committed_database, "worker-a")
        assert (claimed.id, claimed.attempts) == (job_id, attempt)
        async with tenant_session(committed_database, account.organization_id) as session:
            statuses.append(
                await queue.fail(session, worker="worker-a", job=claimed, error=f"boom {attempt}")
            )
        await make_due(committed_database, account, job_id)
    assert statuses == ["queued", "dead"]
    job = await load_job(committed_database, account, job_id)
    assert (job.status, job.attempts, job.last_error) == ("dead", 2, "boom 2")
    assert job.locked_by is None and job.finished_at is not None
    assert await claim(committed_database, "worker-b") == []  # dead stays dead


# --- row-level security -----------------------------------------------------------------------


async def test_jobs_are_walled_per_organization_yet_claimed_across_them(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    first, second = accounts
    first_ids = set(await enqueue_jobs(committed_database, first, new_kind(), 2))
    second_ids = set(await enqueue_jobs(committed_database, second, new_kind(), 3))

    raw = await asyncpg.connect(**asyncpg_connect_args(database_urls.runtime))
    try:
        # No tenant: not a single job, not even by id.
        assert await raw.fetchval("SELECT count(*) FROM jobs") == 0
        assert (
            await raw.fetchval(
                "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[])",
                list(first_ids | second_ids),
            )
            == 0
        )
        # Tenant A: A's jobs only.
        async with raw.transaction():
            await raw.execute(
                "SELECT set_config('app.organization_id', $1, true)", str(first.organization_id)
            )
            rows = await raw.fetch("SELECT id, organization_id FROM jobs")
        assert {row["organization_id"] for row in rows} == {first.organization_id}
        assert {row["id"] for row in rows} == first_ids
        # The setting was transaction-local: the wall is back.
        assert await raw.fetchval("SELECT count(*) FROM jobs") == 0
    finally:
        await raw.close(timeout=5)

    # A worker's claim (no tenant) looks across organizations.
    async with committed_database.transaction() as session:
        claimed = await _claim_without_tenant(session)
    owners = {job.id: job.organization_id for job in claimed}
    assert set(owners) == first_ids | second_ids
    assert {owners[job_id] for job_id in first_ids} == {first.organization_id}
    assert {owners[job_id] for job_id in second_ids} == {second.organization_id}


async def _claim_without_tenant(session: AsyncSession) -> list[queue.ClaimedJob]:
    assert await session.scalar(text("SELECT current_setting('app.organization_id', true)")) in (
        None,
        "",
    )
    return await queue.claim(session, worker="worker-a", limit=100, lease=LEASE)


async def _hold(database: Database, account: Account, ids: list[uuid.UUID], **values) -> None:
    async with tenant_session(database, account.organization_id) as session:
        await session.execute(update(Job).where(Job.id.in_(ids)).values(**values))


async def test_others_waiting_is_another_organizations_turn_at_a_busy_pool(
    committed_database: Database, accounts: list[Account], app: Any, owner_engine: AsyncEngine
):
    """A chunk hands its cases back only for a job of the kinds asked about (not a delivery
    held by its organization's cap, which no worker may take), due and unclaimed a while, of
    an organization with fewer jobs under way than the asker's less one: two organizations
    even at the workers never hand back to each other."""
    mine, theirs = accounts
    kind, other_kind = new_kind(), new_kind()
    running = {"status": "running", "locked_by": "w", "locked_until": func.now() + LEASE}

    async def asks(account: Account, kinds: list[str], waited: float = 1.0) -> bool:
        async with tenant_session(committed_database, account.organization_id) as session:
            return await queue.others_waiting(
                session, organization_id=account.organization_id, waited=waited, kinds=kinds
            )

    held = await enqueue_jobs(committed_database, mine, kind, 4)
    await _hold(committed_database, mine, held, **running)
    queued = await enqueue_jobs(committed_database, theirs, kind)
    await _hold(committed_database, theirs, queued, run_after=func.now() - timedelta(seconds=5))
    assert await asks(mine, [kind])  # 4 under way against none
    assert not await asks(mine, [other_kind])
    assert not await asks(mine, [kind], waited=10)  # due only just now: a free worker takes it
    assert not await asks(theirs, [kind])  # its own job, and it has fewer under way
    busy = await enqueue_jobs(committed_database, theirs, other_kind, 3)
    await _hold(committed_database, theirs, busy[:2], **running)
    assert await asks(mine, [kind])  # 2 against 4: one handed back makes it 3 and 3
    await _hold(committed_database, theirs, busy, **running)
    assert not await asks(mine, [kind])  # 3 against 4: as even as four workers allow
    await _hold(committed_database, theirs, busy[1:], status="done", locked_by=None)
    await _hold(committed_database, mine, held[2:], status="done", locked_by=None)
    assert not await asks(mine, [kind])  # 1 against 2: as even as three workers allow
    await _hold(committed_database, theirs, busy, status="done", locked_by=None)
    await _hold(committed_database, mine, held[1:], status="done", locked_by=None)
    assert await asks(mine, [kind])  # none against 1: one worker, or one each, is shared
    # A third holding the most: it gives the newcomer a worker, not the one with a single one.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as client:
        third = await register(client)
    try:
        most = await enqueue_jobs(committed_database, third, kind, 2)
        await _hold(committed_database, third, most, **running)
        assert await asks(third, [kind])  # none against 2, the most
        assert not await asks(mine, [kind])  # none against 1, while another holds 2
    finally:
        await remove_account(owner_engine, third)
    await _hold(committed_database, theirs, busy, status="done", locked_by=None)
    await _hold(committed_database, theirs, queued, status="done")
