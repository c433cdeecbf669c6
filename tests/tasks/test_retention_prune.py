"""Retention pruning against real data of two organizations: real runs (their events, results
and jobs), dead jobs, webhook deliveries, login sessions and invitations, back-dated by the
owner, then pruned through `assay_retention_prune` as the runtime role."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.engine.jobs import HANDLERS, on_dead
from app.engine.maintenance import CATEGORIES, RetentionPolicy, prune, prune_batch
from database.core import Database
from database.setup import DatabaseUrls
from tasks.worker import WorkerPool
from tests.fakes.webhook_receiver import Fault, WebhookReceiver
from tests.helpers import Account, create_project, invite, login, until_waiting_for_locks
from tests.tasks.conftest import enqueue_jobs, new_kind, wait_for_status, wait_until
from utils.auth import hash_secret

DAYS = 30
POLICY = RetentionPolicy(
    run_events_days=DAYS,
    jobs_days=DAYS,
    dead_jobs_days=DAYS,
    sessions_days=DAYS,
    invitations_days=DAYS,
    response_cache_days=DAYS,
)
PAST = f"now() - interval '{DAYS + 1} days'"  # just past the period
WITHIN = f"now() - interval '{DAYS - 1} days'"  # just within it
LONG_AGO = "now() - interval '365 days'"
# Runs that ended past the period (completed or not); runs that have not completed.
ENDED_OLD = ("old", "old_elsewhere", "cancelled", "failed")
UNFINISHED = ("running", "cancelled", "failed")


@dataclass
class World:
    owner: AsyncEngine
    # old, recent, cancelled (A); old_elsewhere, running, failed (B)
    runs: dict[str, uuid.UUID]
    dead_jobs: dict[str, uuid.UUID]  # old, recent
    sessions: dict[str, uuid.UUID]  # expired_old, revoked_old, expired_recent, ...
    spent_token: uuid.UUID  # rotated away long ago, in the live session
    invitations: dict[str, uuid.UUID]  # expired_old, accepted_old, revoked_recent, ...
    cached: dict[str, tuple[uuid.UUID, str]]  # answers fetched: old, old_elsewhere, recent

    async def cached_answers(self) -> set[str]:
        async with self.owner.connect() as conn:
            rows = await conn.execute(text("SELECT organization_id, key FROM response_cache"))
            kept = {(row.organization_id, row.key) for row in rows}
        return {name for name, row in self.cached.items() if row in kept}

    async def count(self, sql: str, **params: Any) -> int:
        async with self.owner.connect() as conn:
            return int((await conn.execute(text(sql), params)).scalar_one())

    async def events(self, run: str) -> int:
        return await self.count(
            "SELECT count(*) FROM run_events WHERE run_id = :id", id=self.runs[run]
        )

    async def results(self, run: str) -> int:
        return await self.count(
            "SELECT count(*) FROM results WHERE run_id = :id", id=self.runs[run]
        )

    async def run_jobs(self, run: str) -> int:
        return await self.count(
            "SELECT count(*) FROM jobs WHERE payload->>'run_id' = :id", id=str(self.runs[run])
        )

    async def exists(self, table: str, row_id: uuid.UUID) -> bool:
        return await self.count(f"SELECT count(*) FROM {table} WHERE id = :id", id=row_id) == 1


def _workers(database: Database, urls: DatabaseUrls) -> WorkerPool:
    return WorkerPool(
        database,
        HANDLERS,
        on_dead=on_dead,
        concurrency=2,
        listen_url=urls.runtime,
        poll_seconds=0.2,
    )


async def _post(client: httpx.AsyncClient, account: Account, path: str, body: dict) -> Any:
    response = await client.post(f"/api/v1{path}", json=body, headers=account.headers)
    assert response.status_code in (200, 201, 202), response.text
    return response.json()


async def _runnable_set(client: httpx.AsyncClient, account: Account) -> str:
    """A test set of two cases, scored by one metric, against the offline demo model."""
    model = await _post(client, account, "/models", {"name": "demo", "provider": "demo"})
    project = await _post(
        client, account, "/projects", {"name": "p", "default_target_model_id": model["id"]}
    )
    tests = [
        await _post(client, account, "/tests", {"project_id": project["id"], "input": words})
        for words in ("hello", "again")
    ]
    test_set = await _post(
        client,
        account,
        "/test-sets",
        {"project_id": project["id"], "name": "s", "test_ids": [t["id"] for t in tests]},
    )
    metric = await _post(
        client,
        account,
        "/metrics",
        {"project_id": project["id"], "name": "m", "type": "word-count", "parameters": {"min": 0}},
    )
    response = await client.put(
        f"/api/v1/test-sets/{test_set['id']}/metrics",
        json={"metric_ids": [metric["id"]]},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    return str(test_set["id"])


async def _finished_run(client: httpx.AsyncClient, account: Account, test_set_id: str) -> uuid.UUID:
    run = await _post(client, account, "/runs", {"test_set_id": test_set_id})

    async def ended() -> bool:
        current = await client.get(f"/api/v1/runs/{run['id']}", headers=account.headers)
        return bool(current.json()["status"] == "completed")

    await wait_until(ended, within=30, interval=0.1)
    return uuid.UUID(run["id"])


async def _session_of(owner: AsyncEngine, refresh_token: str) -> uuid.UUID:
    async with owner.connect() as conn:
        found = await conn.execute(
            text("SELECT session_id FROM refresh_tokens WHERE token_hash = :hash"),
            {"hash": hash_secret(refresh_token)},
        )
        return uuid.UUID(str(found.scalar_one()))


@pytest.fixture
async def world(
    accounts: list[Account],
    committed_database: Database,
    app: Any,
    owner_engine: AsyncEngine,
    database_urls: DatabaseUrls,
) -> AsyncIterator[World]:
    """Everything retention looks at, in two organizations, some of it past the period and some
    just within it. Removed with the organizations (and users) by `accounts`."""
    first, second = accounts
    pool = _workers(committed_database, database_urls)
    await pool.start()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as client:
            set_a = await _runnable_set(client, first)
            set_b = await _runnable_set(client, second)
            runs = {
                "old": await _finished_run(client, first, set_a),
                "recent": await _finished_run(client, first, set_a),
                "cancelled": await _finished_run(client, first, set_a),
                "old_elsewhere": await _finished_run(client, second, set_b),
                "running": await _finished_run(client, second, set_b),
                "failed": await _finished_run(client, second, set_b),
            }
            dead = await enqueue_jobs(committed_database, first, new_kind(), 2, max_attempts=1)
            await wait_for_status(committed_database, first, dead, "dead")

            # Login sessions: the registration's (refreshed once: its first token is spent),
            # and four more by logging in.
            refreshed = await client.post(
                "/api/v1/auth/refresh", json={"refresh_token": first.refresh_token}
            )
            assert refreshed.status_code == 200, refreshed.text
            live = await _session_of(owner_engine, refreshed.json()["refresh_token"])
            logins = []
            for _ in range(4):
                response = await login(client, first.email)
                assert response.status_code == 200, response.text
                logins.append(await _session_of(owner_engine, response.json()["refresh_token"]))

            names = ("expired_old", "accepted_old", "revoked_recent", "expired_recent", "pending")
            invitations = {
                name: uuid.UUID(
                    (await invite(client, first, f"{name}-{uuid.uuid4().hex[:8]}@example.com"))[
                        "id"
                    ]
                )
                for name in names
            }
    finally:
        await pool.stop(drain_seconds=1)

    sessions = dict(
        zip(("expired_old", "revoked_old", "expired_recent", "revoked_recent"), logins, strict=True)
    )
    sessions["live"] = live
    async with owner_engine.connect() as conn:
        spent = await conn.execute(
            text("SELECT id FROM refresh_tokens WHERE token_hash = :hash"),
            {"hash": hash_secret(first.refresh_token)},
        )
        spent_token = uuid.UUID(str(spent.scalar_one()))
    statements = [
        # Runs that ended long ago and just recently; a run still going for a year; runs that
        # ended long ago without completing (a failed run's chunk job is dead).
        f"UPDATE runs SET finished_at = {PAST} WHERE id IN (:old, :old_elsewhere)",
        f"UPDATE runs SET status = 'cancelled', finished_at = {PAST} WHERE id = :cancelled",
        f"UPDATE runs SET status = 'failed', finished_at = {PAST} WHERE id = :failed",
        "UPDATE jobs SET status = 'dead' WHERE CAST(payload->>'run_id' AS uuid) = :failed",
        f"UPDATE runs SET finished_at = {WITHIN} WHERE id = :recent",
        f"UPDATE runs SET status = 'running', finished_at = NULL, started_at = {LONG_AGO},"
        f" updated_at = {LONG_AGO} WHERE id = :running",
        f"UPDATE run_events SET created_at = {LONG_AGO} WHERE run_id = :running",
        f"UPDATE jobs SET finished_at = {PAST}"
        " WHERE CAST(payload->>'run_id' AS uuid)"
        " IN (:old, :old_elsewhere, :running, :cancelled, :failed)",
        f"UPDATE jobs SET finished_at = {WITHIN} WHERE CAST(payload->>'run_id' AS uuid) = :recent",
        f"UPDATE jobs SET finished_at = {PAST} WHERE id = :dead_old",
        f"UPDATE jobs SET finished_at = {WITHIN} WHERE id = :dead_recent",
        # Sessions: every token expired, revoked, recently expired, recently revoked; the live
        # one keeps its newest token, but the one it rotated away expired long ago.
        f"UPDATE auth_sessions SET created_at = {LONG_AGO}"
        " WHERE id IN (:expired_old, :expired_recent)",
        f"UPDATE refresh_tokens SET expires_at = {PAST} WHERE session_id = :expired_old",
        f"UPDATE refresh_tokens SET expires_at = {WITHIN} WHERE session_id = :expired_recent",
        f"UPDATE auth_sessions SET revoked_at = {PAST} WHERE id = :revoked_old",
        f"UPDATE refresh_tokens SET expires_at = {PAST} WHERE session_id = :revoked_old",
        f"UPDATE auth_sessions SET revoked_at = {WITHIN} WHERE id = :revoked_recent",
        f"UPDATE refresh_tokens SET expires_at = {PAST} WHERE id = :spent_token",
        # Invitations: expired, accepted (before it expired), revoked, recently expired.
        f"UPDATE invitations SET expires_at = {PAST} WHERE id = :inv_expired_old",
        f"UPDATE invitations SET accepted_at = {PAST}, expires_at = now() - interval '29 days'"
        " WHERE id = :inv_accepted_old",
        f"UPDATE invitations SET revoked_at = {WITHIN} WHERE id = :inv_revoked_recent",
        f"UPDATE invitations SET expires_at = {WITHIN} WHERE id = :inv_expired_recent",
    ]
    params = {
        **runs,
        "dead_old": dead[0],
        "dead_recent": dead[1],
        **sessions,
        "spent_token": spent_token,
        **{f"inv_{name}": row for name, row in invitations.items()},
    }
    # Cached answers of both organizations, fetched long ago and within the period.
    cached = {
        "old": (first.organization_id, uuid.uuid4().hex),
        "old_elsewhere": (second.organization_id, uuid.uuid4().hex),
        "recent": (first.organization_id, uuid.uuid4().hex),
    }
    async with owner_engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement), params)
        for name, (organization_id, key) in cached.items():
            fetched = WITHIN if name == "recent" else PAST
            await conn.execute(
                text(
                    "INSERT INTO response_cache (organization_id, key, output, created_at)"
                    f" VALUES (:organization, :key, 'an answer', {fetched})"
                ),
                {"organization": organization_id, "key": key},
            )
    yield World(
        owner=owner_engine,
        runs=runs,
        dead_jobs={"old": dead[0], "recent": dead[1]},
        sessions=sessions,
        spent_token=spent_token,
        invitations=invitations,
        cached=cached,
    )


async def test_each_kind_goes_once_past_its_period_and_not_before(world, committed_database):
    events = {run: await world.events(run) for run in world.runs}
    plans = {run: await world.run_jobs(run) for run in UNFINISHED}
    old_jobs = await world.run_jobs("old") + await world.run_jobs("old_elsewhere")

    report = await prune(committed_database.transaction, POLICY)

    assert not report.skipped and report.rounds == 1
    assert tuple(report.pruned) == CATEGORIES
    assert report.pruned == {
        "run_events": sum(events[run] for run in ENDED_OLD),
        "jobs": old_jobs,
        "dead_jobs": 1,  # (the failed run's dead chunk job stays: below)
        "webhook_deliveries": 0,
        # The expired and the revoked session's, and the spent one of the live session.
        "refresh_tokens": 3,
        "auth_sessions": 2,  # each once left without a token
        "invitations": 2,
        "response_cache": 2,
    }
    # Events of runs that ended long ago go, in both organizations, completed or not; those of
    # a run that ended recently, or is still going, stay.
    assert {run: await world.events(run) for run in world.runs} == {
        run: 0 if run in ENDED_OLD else events[run] for run in world.runs
    }
    # Finished jobs: those of the old completed runs go, the recent run's stay; a run that has
    # not completed keeps every chunk job (done or dead): they are its plan. Dead jobs likewise.
    assert await world.run_jobs("old") == 0
    assert await world.run_jobs("old_elsewhere") == 0
    assert await world.run_jobs("recent") > 0
    assert {run: await world.run_jobs(run) for run in UNFINISHED} == plans
    assert not await world.exists("jobs", world.dead_jobs["old"])
    assert await world.exists("jobs", world.dead_jobs["recent"])
    # Sessions: expired or revoked long ago go; recently expired or revoked, and live, stay.
    sessions = {
        name: await world.exists("auth_sessions", row) for name, row in world.sessions.items()
    }
    assert sessions == {
        "expired_old": False,
        "revoked_old": False,
        "expired_recent": True,
        "revoked_recent": True,
        "live": True,
    }
    # The live session's long-expired spent token goes; its newest token stays, so it goes on.
    assert not await world.exists("refresh_tokens", world.spent_token)
    live_tokens = await world.count(
        "SELECT count(*) FROM refresh_tokens WHERE session_id = :id", id=world.sessions["live"]
    )
    assert live_tokens == 1
    invitations = {
        name: await world.exists("invitations", row) for name, row in world.invitations.items()
    }
    assert invitations == {
        "expired_old": False,
        "accepted_old": False,
        "revoked_recent": True,
        "expired_recent": True,
        "pending": True,
    }
    # Answers fetched long ago go, in both organizations; one fetched within the period stays.
    assert await world.cached_answers() == {"recent"}

    # A second prune finds nothing more.
    again = await prune(committed_database.transaction, POLICY)
    assert set(again.pruned.values()) == {0}


async def test_runs_results_and_tests_survive_and_a_running_run_keeps_its_events(
    world, committed_database
):
    shortest = RetentionPolicy(1, 1, 1, 1, 1, 1)
    results_before = {run: await world.results(run) for run in world.runs}
    running_events = await world.events("running")
    tests_before = await world.count("SELECT count(*) FROM tests")
    assert running_events > 0 and all(count == 2 for count in results_before.values())

    await prune(committed_database.transaction, shortest)

    for run, run_id in world.runs.items():
        assert await world.exists("runs", run_id), run
        assert await world.results(run) == results_before[run], run
    evaluations = "SELECT count(*) FROM evaluations WHERE run_id = :id"
    assert await world.count(evaluations, id=world.runs["old"]) == 2
    assert await world.count("SELECT count(*) FROM tests") == tests_before
    # A year-old log of a run still going is kept whole; runs that ended lost theirs.
    assert await world.events("running") == running_events
    assert await world.events("old") == 0


@pytest.mark.parametrize(
    ("setting", "kept"),
    [
        ("run_events_days", "run_events"),
        ("jobs_days", "jobs"),
        ("dead_jobs_days", "dead_jobs"),
        ("sessions_days", "auth_sessions"),
        ("invitations_days", "invitations"),
        ("response_cache_days", "response_cache"),
    ],
)
async def test_an_off_setting_keeps_its_kind(world, committed_database, setting, kept):
    report = await prune(committed_database.transaction, replace(POLICY, **{setting: None}))

    survivors = {
        "run_events": await world.events("old") > 0,
        "jobs": await world.run_jobs("old") > 0,
        "dead_jobs": await world.exists("jobs", world.dead_jobs["old"]),
        "auth_sessions": await world.exists("auth_sessions", world.sessions["revoked_old"]),
        "invitations": await world.exists("invitations", world.invitations["expired_old"]),
        "response_cache": "old" in await world.cached_answers(),
    }
    assert survivors == {kind: kind == kept for kind in survivors}
    assert report.pruned[kept] == 0
    if kept == "auth_sessions":
        assert report.pruned["refresh_tokens"] == 0


async def test_only_one_prune_works_at_a_time(world, committed_database):
    async def old_events() -> int:
        return sum([await world.events(run) for run in ENDED_OLD])

    events = await old_events()
    async with committed_database.transaction() as holder:
        # This one holds the lock until its transaction ends...
        first = await prune_batch(holder, POLICY, batch=1)
        assert first is not None and first["run_events"] > 0
        # ...so another process's prune, on another connection, leaves the work to it.
        second = await prune(committed_database.transaction, POLICY)
        assert second.skipped and second.pruned == {}
    assert await old_events() == events - first["run_events"]
    # Once the holder is done, the next prune does the rest.
    third = await prune(committed_database.transaction, POLICY)
    assert not third.skipped
    assert await old_events() == 0


async def test_events_go_a_whole_run_at_a_time_in_bounded_batches(world, committed_database):
    """A live replay must never find part of a run's log: a batch takes whole runs, until their
    events reach its size."""
    before = {run: await world.events(run) for run in world.runs}
    assert all(before[run] > 2 for run in ENDED_OLD)

    async def emptied() -> set[str]:
        """The runs left with no event, once checked that no run lost only some."""
        after = {run: await world.events(run) for run in world.runs}
        assert all(after[run] in (0, before[run]) for run in world.runs), (before, after)
        return {run for run in world.runs if after[run] == 0}

    # One round of a batch smaller than a run's log: that one run goes, whole; the other kinds
    # keep to the batch.
    one = await prune(committed_database.transaction, POLICY, batch=2, max_rounds=1)
    assert one.rounds == 1
    [first] = await emptied()
    assert one.pruned["run_events"] == before[first]
    assert max(count for kind, count in one.pruned.items() if kind != "run_events") <= 2

    # A batch a little larger than a run's log takes two of them (the logs are of one size).
    left = [before[run] for run in ENDED_OLD if run != first]
    assert max(left) < 2 * min(left)
    async with committed_database.transaction() as session:
        two = await prune_batch(session, POLICY, batch=max(left) + 1)
    assert two is not None
    gone = await emptied()
    assert len(gone) == 3
    assert two["run_events"] == sum(before[run] for run in gone - {first})

    rest = await prune(committed_database.transaction, POLICY, batch=1)
    assert rest.rounds > 1  # a full batch calls for another
    assert await emptied() == set(ENDED_OLD)  # the recent and the running run keep theirs


async def test_a_run_reopened_while_pruning_keeps_its_new_events(world, committed_database):
    """The runs to prune are read once; a run reopened (repeated, resumed) before its turn
    comes keeps its log, with what the reopening wrote. The first delete is held on an event
    of each run while all of them reopen: the run it was deleting goes as it was read, every
    other one is looked at again."""
    ended = [world.runs[run] for run in ENDED_OLD]
    before = {run: await world.events(run) for run in ENDED_OLD}
    async with world.owner.connect() as holder:
        transaction = await holder.begin()
        await holder.execute(
            text(
                "SELECT 1 FROM run_events WHERE (run_id, seq) IN"
                " (SELECT run_id, min(seq) FROM run_events WHERE run_id = ANY(:ids)"
                "  GROUP BY run_id) FOR UPDATE"
            ),
            {"ids": ended},
        )
        pruning = asyncio.ensure_future(prune(committed_database.transaction, POLICY))
        await until_waiting_for_locks(world.owner, 1)
        await holder.execute(
            text("UPDATE runs SET status = 'running' WHERE id = ANY(:ids)"), {"ids": ended}
        )
        await holder.execute(
            text(
                "INSERT INTO run_events (run_id, seq, organization_id, type, data)"
                " SELECT run_id, max(seq) + 1, min(organization_id::text)::uuid, 'run.started',"
                " '{}' FROM run_events WHERE run_id = ANY(:ids) GROUP BY run_id"
            ),
            {"ids": ended},
        )
        await transaction.commit()
    await asyncio.wait_for(pruning, timeout=30)
    after = {run: await world.events(run) for run in ENDED_OLD}
    # The one whose delete was under way lost its log as read (the reopening's event, not
    # seen by that delete, stays); every other kept all of it.
    [taken] = [run for run in ENDED_OLD if after[run] == 1]
    assert {run: after[run] for run in ENDED_OLD if run != taken} == {
        run: before[run] + 1 for run in ENDED_OLD if run != taken
    }


async def test_a_run_that_ended_unfinished_keeps_its_plan_and_resumes(
    world, committed_database, accounts, app, database_urls
):
    """Resuming rebuilds a run's work from its chunk jobs: a prune leaves them to a run that has
    not completed, so a cancelled or failed run of long ago still resumes, and completes."""
    plans = {run: await world.run_jobs(run) for run in ("cancelled", "failed")}
    assert all(plans.values())
    report = await prune(committed_database.transaction, RetentionPolicy(1, 1, 1, 1, 1, 1))
    assert report.pruned["jobs"] > 0 and report.pruned["dead_jobs"] > 0
    assert {run: await world.run_jobs(run) for run in plans} == plans
    # Each ended a case short: that case is what its resume runs.
    async with world.owner.begin() as conn:
        await conn.execute(
            text("DELETE FROM results WHERE run_id IN (:cancelled, :failed) AND position = 1"),
            {run: world.runs[run] for run in plans},
        )
    assert [await world.results(run) for run in plans] == [1, 1]

    first, second = accounts
    owners = {"cancelled": first, "failed": second}
    pool = _workers(committed_database, database_urls)
    await pool.start()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as client:
            for run, account in owners.items():
                resumed = await _post(client, account, f"/runs/{world.runs[run]}/resume", {})
                assert resumed["status"] == "queued"

            async def completed() -> bool:
                for run, account in owners.items():
                    read = await client.get(
                        f"/api/v1/runs/{world.runs[run]}", headers=account.headers
                    )
                    if read.json()["status"] != "completed":
                        return False
                return True

            await wait_until(completed, within=30, interval=0.1)
    finally:
        await pool.stop(drain_seconds=1)
    assert [await world.results(run) for run in plans] == [2, 2]


async def _delivery_log(
    client: httpx.AsyncClient, account: Account, hooks: str, hook_id: str
) -> dict[str, str]:
    """The webhook's delivery log through the API: {delivery id: status}."""
    response = await client.get(f"/api/v1{hooks}/{hook_id}/deliveries", headers=account.headers)
    assert response.status_code == 200, response.text
    return {item["id"]: item["status"] for item in response.json()["items"]}


async def test_the_delivery_log_loses_what_ended_long_ago_never_what_is_pending(
    accounts, committed_database, app, owner_engine, database_urls, runtime, monkeypatch
):
    monkeypatch.setattr(runtime.settings, "allow_private_networks", True)  # a loopback receiver
    monkeypatch.setattr(runtime.settings, "webhook_max_attempts", 1)  # a refused message fails
    first = accounts[0]
    pool = _workers(committed_database, database_urls)
    transport = httpx.ASGITransport(app=app)
    ids: dict[str, str] = {}
    with WebhookReceiver() as receiver:
        async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as client:
            project = await create_project(client, first)
            hooks = f"/projects/{project['id']}/webhooks"
            body = {"url": receiver.endpoint, "events": ["run.completed"]}
            hook = await _post(client, first, hooks, body)
            receiver.secrets = [hook["secret"]]
            receiver.enqueue(Fault.http(503))  # the first message is refused

            async def send_test() -> str:
                return str((await _post(client, first, f"{hooks}/{hook['id']}/test", {}))["id"])

            await pool.start()
            try:
                for name in ("failed_old", "delivered_old", "delivered_recent"):
                    ids[name] = await send_test()

                    async def sent(delivery: str = ids[name]) -> bool:
                        log = await _delivery_log(client, first, hooks, hook["id"])
                        return log[delivery] != "pending"

                    await wait_until(sent, within=15, interval=0.1)
            finally:
                await pool.stop(drain_seconds=1)
            ids["pending_old"] = await send_test()  # no worker is left to send it
            statuses = ("failed", "delivered", "delivered", "pending")
            assert await _delivery_log(client, first, hooks, hook["id"]) == dict(
                zip(ids.values(), statuses, strict=True)
            )

            async with owner_engine.begin() as conn:
                for statement in (
                    f"UPDATE webhook_deliveries SET created_at = {LONG_AGO}"
                    " WHERE id IN (:failed_old, :delivered_old, :delivered_recent, :pending_old)",
                    f"UPDATE webhook_deliveries SET last_attempt_at = {PAST}"
                    " WHERE id = :failed_old",
                    f"UPDATE webhook_deliveries SET last_attempt_at = {PAST}, delivered_at = {PAST}"
                    " WHERE id = :delivered_old",
                    # Sent again lately: its age counts from then, not from its first sending.
                    f"UPDATE webhook_deliveries SET last_attempt_at = {WITHIN},"
                    f" delivered_at = {WITHIN} WHERE id = :delivered_recent",
                ):
                    await conn.execute(text(statement), ids)

            # The log is kept as long as finished jobs are: with those kept forever, so is it.
            kept = await prune(committed_database.transaction, replace(POLICY, jobs_days=None))
            assert kept.pruned["webhook_deliveries"] == 0
            report = await prune(committed_database.transaction, POLICY)
            assert report.pruned["webhook_deliveries"] == 2
            assert await _delivery_log(client, first, hooks, hook["id"]) == {
                ids["delivered_recent"]: "delivered",
                ids["pending_old"]: "pending",
            }


async def test_a_stream_of_a_pruned_run_ends_at_once(world, committed_database, accounts, app):
    """A finished run whose events are gone answers 204 (EventSource stops), not a stream that
    would wait for events that will never come."""
    await prune(committed_database.transaction, POLICY)
    first = accounts[0]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as client:
        pruned = await client.get(f"/public/runs/{world.runs['old']}/events", headers=first.headers)
    assert pruned.status_code == 204
    assert pruned.content == b""
