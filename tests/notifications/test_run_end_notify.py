"""A run's end is announced at its commit: the notifications of a run under way are coalesced
(one per run per interval), and the end is never held back by them, since the clients
following a run (the CLI waiting on a gate, a dashboard) are waiting for just that event."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
from sqlalchemy import text

from database.core import asyncpg_connect_args
from database.results import crud
from notifications import publisher as publishing
from notifications.publisher import EVENTS_CHANNEL, Publisher
from tests.helpers import tenant_session
from tests.notifications.conftest import Live


async def test_an_end_is_sent_at_once_where_other_changes_wait_for_the_interval(
    committed_database, database_urls
) -> None:
    run_id = uuid.uuid4()  # only a payload here: no run is read
    received: list[str] = []
    connection = await asyncpg.connect(**asyncpg_connect_args(database_urls.runtime))
    publisher = Publisher(committed_database, interval=60.0)

    async def notified(count: int) -> None:
        async with asyncio.timeout(10):
            while received.count(str(run_id)) < count:  # noqa: ASYNC110 (no event to wait on)
                await asyncio.sleep(0.02)

    try:
        await connection.add_listener(
            EVENTS_CHANNEL, lambda _c, _pid, _channel, payload: received.append(payload)
        )
        await publisher.start()
        publisher.runs_changed([run_id])
        await notified(1)  # the first change of a run goes at once

        publisher.runs_changed([run_id])  # the next waits for the interval...
        await asyncio.sleep(0.5)
        assert received.count(str(run_id)) == 1

        publisher.runs_changed([run_id], {run_id})  # ...an end does not
        await notified(2)
    finally:
        await publisher.stop()
        await connection.close()


async def test_the_commit_of_a_runs_end_hands_it_over_as_ended(
    live: Live, committed_database
) -> None:
    """Recording a status that ends the run marks its notification as an end; recording any
    other change does not."""
    target = await live.model(provider="demo")
    test_set = await live.test_set([{"input": "q"}])
    run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
    run = await live.wait(run["id"])
    run_id, organization = uuid.UUID(run["id"]), live.account.organization_id
    handed: list[tuple[set[uuid.UUID], set[uuid.UUID]]] = []
    assert live.notifications is not None
    publishing.install_publisher(lambda runs, ended: handed.append((set(runs), set(ended))))
    try:
        async with tenant_session(committed_database, organization) as session:
            await crud.reopen(session, run_id, repetitions=1, total=1, max_cost=None)
        for status in ("running", None, "completed"):
            async with tenant_session(committed_database, organization) as session:
                await crud.update_run(
                    session,
                    run_id=run_id,
                    organization_id=organization,
                    events=[("run.progress", {})],
                    status=status,
                )
    finally:
        publishing.install_publisher(live.notifications.publisher.runs_changed)
    ours = [(runs & {run_id}, ended & {run_id}) for runs, ended in handed if run_id in runs]
    assert ours == [({run_id}, set()), ({run_id}, set()), ({run_id}, {run_id})]


async def test_a_savepoint_within_the_ending_transaction_holds_nothing_back(
    committed_database,
) -> None:
    """A run's end compares it with its baseline in a savepoint (a regression webhook): its
    release must not announce the end before the transaction commits, nor its rollback (no
    case in common) drop the announcement."""
    run_id = uuid.uuid4()  # only a payload here: no run is read
    handed: list[tuple[str, set[uuid.UUID], set[uuid.UUID]]] = []
    moment = ["open"]
    installed = publishing._publish  # the app's, when a test before started one
    publishing.install_publisher(lambda runs, ended: handed.append((moment[0], runs, ended)))
    try:
        for outcome in ("released", "rolled back"):
            moment[0] = "open"
            async with committed_database.transaction() as session:
                await session.execute(text("SELECT 1"))
                publishing.publish_after_commit(session, run_id, ended=True)
                with contextlib.suppress(LookupError):
                    async with session.begin_nested():
                        await session.execute(text("SELECT 1"))
                        if outcome == "rolled back":
                            raise LookupError("no case in common")
                moment[0] = "committing"
    finally:
        publishing.install_publisher(installed)
    assert handed == [("committing", {run_id}, {run_id})] * 2
