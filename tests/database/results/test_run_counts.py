"""A run's counts are kept in `run_counts` by triggers on `results`: they equal a count of its
results however they are written or deleted, go with the run, are filled in by the migration for
runs made before it, and keeping them never deadlocks a writer with a model being deleted."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from database.core import Database
from database.migrate import migrate
from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import tenant_session
from tests.scratch import downgrade, model_differences

MIGRATION = Path(__file__).parents[3] / "migrations/versions/2026_12_02_run_counts.py"
KEPT = text("SELECT done, passed, failed, errored FROM run_counts WHERE run_id = :id")
COUNTED = text(
    "SELECT count(*), count(*) FILTER (WHERE status = 'passed'),"
    " count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'errored')"
    " FROM results WHERE run_id = :id"
)
ADD_RESULT = text(
    "INSERT INTO results (id, organization_id, run_id, position, repetition, input, status,"
    " cached)"
    " SELECT gen_random_uuid(), organization_id, id, 0, :repetition, '{}', 'errored', false"
    " FROM runs WHERE id = :id"
)


def _migration() -> Any:
    spec = importlib.util.spec_from_file_location("run_counts_migration", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _counts(database: Database, organization_id: uuid.UUID, run_id: str) -> tuple:
    async with tenant_session(database, organization_id) as session:
        kept = (await session.execute(KEPT, {"id": run_id})).one_or_none()
        counted = tuple((await session.execute(COUNTED, {"id": run_id})).one())
    return (tuple(kept) if kept is not None else None), counted


async def _finished_run(lab: Lab, fake: FakeOpenAI) -> tuple[dict[str, Any], str]:
    fake.reply = lambda body: "yes" if "pass" in json.dumps(body) else "no"
    target = await lab.openai_model(fake)
    cases = [{"input": f"pass {i}"} for i in range(3)] + [{"input": f"x {i}"} for i in range(2)]
    test_set = await lab.test_set(cases)
    contains = await lab.metric("contains", parameters={"value": "yes"})
    run = await lab.run(test_set, target, metric_ids=[contains])
    return await lab.wait(run["id"]), target


async def test_a_runs_counts_are_its_results_by_status(
    lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    done, _ = await _finished_run(lab, fake)
    run_id, organization = done["id"], lab.account.organization_id

    kept, counted = await _counts(committed_database, organization, run_id)
    assert kept == counted == (5, 3, 2, 0)
    assert done["counts"] | {"total": 5} == {
        "total": 5,
        "done": 5,
        "passed": 3,
        "failed": 2,
        "errored": 0,
    }

    async with tenant_session(committed_database, organization) as session:
        await session.execute(ADD_RESULT, {"id": run_id, "repetition": 7})
        await session.execute(
            text("DELETE FROM results WHERE run_id = :id AND status = 'failed'"), {"id": run_id}
        )
    assert await _counts(committed_database, organization, run_id) == ((4, 3, 0, 1),) * 2
    assert (await lab.get(f"/runs/{run_id}"))["counts"]["errored"] == 1

    # The migration's own statement fills in counts lost (as for runs made before it).
    async with tenant_session(committed_database, organization) as session:
        await session.execute(text("DELETE FROM run_counts"))
        await session.execute(text(_migration().BACKFILL))
    assert await _counts(committed_database, organization, run_id) == ((4, 3, 0, 1),) * 2

    async with tenant_session(committed_database, organization) as session:  # they go too
        await session.execute(text("DELETE FROM runs WHERE id = :id"), {"id": run_id})
    assert await _counts(committed_database, organization, run_id) == (None, (0, 0, 0, 0))


async def test_another_tenant_sees_no_counts(
    lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    done, _ = await _finished_run(lab, fake)
    async with tenant_session(committed_database, uuid.uuid4()) as session:
        assert (await session.execute(KEPT, {"id": done["id"]})).one_or_none() is None


async def _waiting_on_a_lock(database: Database, organization_id: uuid.UUID) -> None:
    """Until some other session of ours waits for a lock."""
    for _ in range(200):
        async with tenant_session(database, organization_id) as session:
            waiting = await session.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            )
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the model's deletion never waited for the run's row")


async def test_a_writer_and_a_model_being_deleted_do_not_deadlock(
    lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    """The writer's order (the run's row lock, results, then the event sequence's UPDATE of the
    run) against a deletion of the run's model, whose SET NULL waits for the run's row: the
    writer must not need the model's row while the deletion holds it."""
    done, target = await _finished_run(lab, fake)
    run_id, organization = done["id"], lab.account.organization_id
    deleting: asyncio.Task[None] | None = None

    async def delete_model() -> None:
        async with tenant_session(committed_database, organization) as session:
            await session.execute(text("DELETE FROM model_configs WHERE id = :id"), {"id": target})

    async with tenant_session(committed_database, organization) as writer:
        await writer.execute(text("SELECT 1 FROM runs WHERE id = :id FOR UPDATE"), {"id": run_id})
        await writer.execute(ADD_RESULT, {"id": run_id, "repetition": 9})
        deleting = asyncio.create_task(delete_model())
        await _waiting_on_a_lock(committed_database, organization)
        await writer.execute(
            text("UPDATE runs SET event_seq = event_seq + 1 WHERE id = :id"), {"id": run_id}
        )
    await asyncio.wait_for(deleting, 10)

    assert await _counts(committed_database, organization, run_id) == ((6, 3, 2, 1),) * 2
    assert (await lab.get(f"/runs/{run_id}"))["target_model_id"] is None


async def _triggers(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_trigger"
                    " WHERE tgname IN ('assay_results_added', 'assay_results_removed',"
                    " 'assay_runs_removed')"
                )
            )
        )


async def test_the_migration_matches_the_model_and_goes_down_and_up(
    own_database: AsyncEngine,
) -> None:
    migration = _migration()
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=migration.revision)
    assert await _triggers(own_database) == 3
    async with own_database.connect() as connection:
        assert await connection.run_sync(model_differences, ["run_counts"]) == []

    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, migration.down_revision)
    assert await _triggers(own_database) == 0
    async with own_database.connect() as connection:
        missing = await connection.run_sync(model_differences, ["run_counts"])
    assert {diff[0] for diff in missing} == {"add_table", "add_index"}

    await migrate(url, None, revision=migration.revision)
    assert await _triggers(own_database) == 3
