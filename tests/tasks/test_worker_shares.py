"""A kind of job with a share of the workers (webhook deliveries, which may each wait on a
receiver for their timeout) runs no more than its share at once, and the other jobs, though
queued after it, are claimed past it meanwhile."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from database.core import Database
from database.migrate import migrate
from database.setup import DatabaseUrls
from tasks import queue
from tasks.worker import JobContext
from tests.helpers import Account, tenant_session
from tests.scratch import downgrade, scratch_database
from tests.tasks.conftest import enqueue_jobs, new_kind, wait_for_status
from tests.tasks.test_worker import running_pool


async def test_a_kind_runs_its_share_and_the_rest_go_past_it(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    account = accounts[0]
    slow, quick = new_kind(), new_kind()
    running = {slow: 0, quick: 0}
    most = {slow: 0, quick: 0}
    finished: dict[str, list[float]] = {slow: [], quick: []}

    def handler(kind: str, seconds: float):
        async def handle(ctx: JobContext) -> None:
            running[kind] += 1
            most[kind] = max(most[kind], running[kind])
            try:
                await asyncio.sleep(seconds)
            finally:
                running[kind] -= 1
            finished[kind].append(time.monotonic())

        return handle

    handlers = {slow: handler(slow, 0.4), quick: handler(quick, 0.05)}
    async with running_pool(
        committed_database, database_urls, handlers, concurrency=3, shares={slow: 1}
    ):
        # Four slow jobs queued first, then six quick ones: oldest first, a pool without the
        # share would fill every slot with slow ones.
        slow_ids = await enqueue_jobs(committed_database, account, slow, 4)
        quick_ids = await enqueue_jobs(committed_database, account, quick, 6)
        await wait_for_status(committed_database, account, quick_ids, "done", within=10)
        await wait_for_status(committed_database, account, slow_ids, "done", within=10)
    assert most[slow] == 1
    assert most[quick] == 2  # the other two slots
    # The quick ones were all done while the slow ones still ran, one after the other.
    assert max(finished[quick]) < sorted(finished[slow])[2]


async def test_one_organizations_slow_jobs_leave_the_others_their_slots(
    committed_database: Database, accounts: list[Account], database_urls: DatabaseUrls
) -> None:
    """Webhook deliveries of one organization whose receivers never answer, queued first:
    with one under way per organization, the other organization's go beside them."""
    first, second = accounts
    slow = new_kind()
    running: dict[uuid.UUID, int] = {first.organization_id: 0, second.organization_id: 0}
    most = dict(running)
    finished: dict[uuid.UUID, list[float]] = {first.organization_id: [], second.organization_id: []}

    async def handle(ctx: JobContext) -> None:
        running[ctx.job.organization_id] += 1
        most[ctx.job.organization_id] = max(
            most[ctx.job.organization_id], running[ctx.job.organization_id]
        )
        try:
            await asyncio.sleep(0.5 if ctx.job.organization_id == first.organization_id else 0.05)
        finally:
            running[ctx.job.organization_id] -= 1
        finished[ctx.job.organization_id].append(time.monotonic())

    async with running_pool(
        committed_database, database_urls, {slow: handle}, concurrency=3, per_organization={slow: 1}
    ):
        firsts = await enqueue_jobs(committed_database, first, slow, 3)
        seconds = await enqueue_jobs(committed_database, second, slow, 3)
        await wait_for_status(committed_database, second, seconds, "done", within=10)
        await wait_for_status(committed_database, first, firsts, "done", within=10)
    assert most == {first.organization_id: 1, second.organization_id: 1}
    # The second organization's were all done while the first's still ran, one by one.
    assert max(finished[second.organization_id]) < sorted(finished[first.organization_id])[1]


async def test_the_claim_skips_the_kinds_it_is_told_to(
    committed_database: Database, accounts: list[Account]
) -> None:
    account = accounts[0]
    skipped, wanted = new_kind(), new_kind()
    await enqueue_jobs(committed_database, account, skipped, 2)
    ids = await enqueue_jobs(committed_database, account, wanted, 1)
    worker = f"test-{uuid.uuid4().hex[:6]}"
    async with committed_database.transaction() as session:
        claimed = await queue.claim(
            session, worker=worker, limit=5, lease=timedelta(seconds=30), skip_kinds=[skipped]
        )
    # Of this test's kinds only the wanted one (its organization's jobs go with it after).
    mine = [job for job in claimed if job.kind in (skipped, wanted)]
    assert [job.id for job in mine] == ids


async def test_a_capped_kind_is_claimed_per_organization_as_many_as_it_may_hold(
    committed_database: Database, accounts: list[Account]
) -> None:
    """One organization's deliveries, queued first, would fill every slot oldest first: with
    a cap of one, a claim takes one of each organization's, and another of an organization
    only once the one it holds has finished (or its lease ran out)."""
    first, second = accounts
    capped, other = new_kind(), new_kind()
    firsts = await enqueue_jobs(committed_database, first, capped, 3)
    seconds = await enqueue_jobs(committed_database, second, capped, 2)
    others = await enqueue_jobs(committed_database, first, other, 2)
    worker = f"test-{uuid.uuid4().hex[:6]}"
    lease = timedelta(seconds=30)
    mine = set(firsts + seconds + others)

    async def claim() -> list[uuid.UUID]:
        async with committed_database.transaction() as session:
            claimed = await queue.claim(
                session, worker=worker, limit=10, lease=lease, per_organization={capped: 1}
            )
        return sorted(job.id for job in claimed if job.id in mine)

    # (Jobs enqueued in one transaction are due at the same moment: any of them is oldest.)
    claimed = await claim()
    assert len(claimed) == 4 and set(others) < set(claimed)  # the other kind: uncapped
    [held_first] = set(claimed) & set(firsts)
    [_held_second] = set(claimed) & set(seconds)
    assert await claim() == []  # each organization holds its one
    async with tenant_session(committed_database, first.organization_id) as session:
        await queue.complete(session, worker=worker, job_id=held_first)
    [next_first] = await claim()
    assert next_first in set(firsts) - {held_first}
    assert await claim() == []


async def test_an_organization_with_nothing_under_way_takes_the_next_turn(
    committed_database: Database, accounts: list[Account]
) -> None:
    """Claimed oldest first, one organization's run (its chunks all queued at its start) held
    every worker until it ended, another's run queued behind all of it: each is now claimed
    by its organization's turn (its jobs under way, then its due ones, oldest first)."""
    first, second = accounts
    kind = new_kind()
    firsts = await enqueue_jobs(committed_database, first, kind, 4)
    [later] = await enqueue_jobs(committed_database, second, kind, 1)
    worker = f"test-{uuid.uuid4().hex[:6]}"
    mine = {*firsts, later}

    async def claim() -> list[uuid.UUID]:
        async with committed_database.transaction() as session:
            claimed = await queue.claim(
                session, worker=worker, limit=1, lease=timedelta(seconds=30)
            )
        return [job.id for job in claimed if job.id in mine]

    # (Jobs enqueued in one transaction are due at the same moment: any of them is oldest.)
    [oldest] = await claim()  # equal turns (the first of each): the older
    assert oldest in firsts
    assert await claim() == [later]  # the first organization has one under way
    assert set(await claim() + await claim()) < set(firsts) - {oldest}


async def test_a_tie_of_turns_goes_to_the_organization_served_longest_ago(
    committed_database: Database, accounts: list[Account]
) -> None:
    """An organization whose job had just ended, with nothing under way, tied a newcomer's
    turn, and the tie went to the older job: a large run's chunks, all queued at its start,
    took every freed worker until the run ended, the newcomer's run waiting behind it."""
    first, second = accounts
    kind = new_kind()
    firsts = await enqueue_jobs(committed_database, first, kind, 3)
    worker = f"test-{uuid.uuid4().hex[:6]}"

    async def claim(mine: set[uuid.UUID]) -> list[uuid.UUID]:
        async with committed_database.transaction() as session:
            claimed = await queue.claim(
                session, worker=worker, limit=1, lease=timedelta(seconds=30)
            )
        return [job.id for job in claimed if job.id in mine]

    [served] = await claim(set(firsts))
    [later] = await enqueue_jobs(committed_database, second, kind, 1)
    async with tenant_session(committed_database, first.organization_id) as session:
        await queue.complete(session, worker=worker, job_id=served)
    # Each has nothing under way: equal turns, the first's jobs the older.
    assert await claim({*firsts, later}) == [later]
    assert await claim(set(firsts)) != []


async def test_the_migration_goes_down_and_up_again(
    database_urls: DatabaseUrls, owner_engine: AsyncEngine
) -> None:
    arguments = text(
        "SELECT pronargs, pg_get_userbyid(proowner), prosrc LIKE '%under_way%' FROM pg_proc"
        " WHERE proname = 'assay_queue_claim'"
    )

    recording = text(
        "SELECT prosrc LIKE '%claimed_at = now()%',"
        " (SELECT count(*) FROM pg_attribute WHERE attrelid = 'jobs'::regclass"
        "  AND attname = 'claimed_at' AND NOT attisdropped)"
        " FROM pg_proc WHERE proname = 'assay_queue_claim'"
    )

    async def claim_function(url: str) -> list[tuple[int, str, bool]]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return [tuple(row) for row in (await connection.execute(arguments)).all()]
        finally:
            await engine.dispose()

    async def turns(url: str) -> tuple[bool, int]:
        """Whether the claim stamps what it takes, and whether the jobs have the stamp."""
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                row = (await connection.execute(recording)).one()
                return bool(row[0]), row[1]
        finally:
            await engine.dispose()

    async def downgraded(url: str, revision: str) -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(downgrade, revision, database_urls.runtime_role)
        finally:
            await engine.dispose()

    async with scratch_database(database_urls, owner_engine, "claim_skips") as url:
        await migrate(url, database_urls.runtime_role)
        assert await turns(url) == (True, 1)
        await downgraded(url, "0039_queue_others_waiting")
        assert await turns(url) == (False, 0)
        await migrate(url, database_urls.runtime_role, revision="0037_claim_takes_turns")
        assert await claim_function(url) == [(6, "assay_worker", True)]
        await downgraded(url, "0036_shorter_key_hints")
        assert await claim_function(url) == [(6, "assay_worker", False)]
        await downgraded(url, "0031_run_prompted")
        assert await claim_function(url) == [(4, "assay_worker", False)]
        await downgraded(url, "0029_prune_recheck")
        assert await claim_function(url) == [(3, "assay_worker", False)]
        await migrate(url, database_urls.runtime_role, revision="0037_claim_takes_turns")
        assert await claim_function(url) == [(6, "assay_worker", True)]
