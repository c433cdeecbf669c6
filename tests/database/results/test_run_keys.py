"""A run's rows (results, evaluations, events) name their run and its organization by one key
(migration 0019_run_keys): none can name another organization's run, they go with their run,
and the migration matches the models, down and up again."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from database.core import Database
from database.migrate import migrate
from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import register, remove_account, tenant_session
from tests.scratch import downgrade, model_differences

BEFORE = "0018_policy_once_per_statement"
RUN_KEYS = "0019_run_keys"
TABLES = {"runs", "results", "evaluations", "run_events"}
# One row of the run each, written as the organization given (the transaction's own, so that
# row-level security's check passes and only the key can refuse it); `n` keeps them apart.
ADDS = {
    "results": """INSERT INTO results (id, organization_id, run_id, position, repetition, input,
        status, cached) VALUES (gen_random_uuid(), :org, :run, 1000 + :n, 0, '{}', 'passed',
        false)""",
    "evaluations": """INSERT INTO evaluations (id, organization_id, result_id, run_id, position,
        metric_name, metric_type, score, passed) VALUES (gen_random_uuid(), :org, :result, :run,
        :position, 'added ' || CAST(:n AS integer), 'contains', 1, true)""",
    "run_events": """INSERT INTO run_events (run_id, seq, organization_id, type, data)
        VALUES (:run, 1000 + :n, :org, 'run_progress', '{}')""",
}
ROWS = {table: f"SELECT count(*) FROM {table} WHERE run_id = :run" for table in ADDS}


async def _finished_run(lab: Lab, fake: FakeOpenAI) -> str:
    fake.reply = lambda body: "yes" if "pass" in json.dumps(body) else "no"
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": f"pass {i}"} for i in range(3)])
    contains = await lab.metric("contains", parameters={"value": "yes"})
    run = await lab.run(test_set, target, metric_ids=[contains])
    return str((await lab.wait(run["id"]))["id"])


async def _rows(database: Database, organization_id: uuid.UUID, run_id: str) -> dict[str, int]:
    async with tenant_session(database, organization_id) as session:
        return {
            table: int(await session.scalar(text(query), {"run": run_id}) or 0)
            for table, query in ROWS.items()
        }


async def test_no_row_names_another_organizations_run(
    lab: Lab, fake: FakeOpenAI, committed_database: Database, owner_engine: AsyncEngine
) -> None:
    run_id = await _finished_run(lab, fake)
    ours = lab.account.organization_id
    assert await _rows(committed_database, ours, run_id) == {
        "results": 3,
        "evaluations": 3,
        "run_events": 6,  # started, 3 results, progress, finished
    }
    async with tenant_session(committed_database, ours) as session:
        result, position = (
            await session.execute(
                text("SELECT id, position FROM results WHERE run_id = :run LIMIT 1"),
                {"run": run_id},
            )
        ).one()
    # The run's own organization may add to it: the rows are sound.
    for add in ADDS.values():
        async with tenant_session(committed_database, ours) as session:
            await session.execute(
                text(add),
                {"org": ours, "run": run_id, "result": result, "position": position, "n": 1},
            )

    other = await register(lab.client)
    try:
        # Row-level security lets another organization write rows of its own; the key refuses
        # them when they name this run (a foreign key's check does not see the policy).
        for table, add in ADDS.items():
            with pytest.raises(IntegrityError, match=f"fk_{table}_run_id_runs"):
                async with tenant_session(committed_database, other.organization_id) as session:
                    await session.execute(
                        text(add),
                        {
                            "org": other.organization_id,
                            "run": run_id,
                            "result": result,
                            "position": position,
                            "n": 2,
                        },
                    )
    finally:
        await remove_account(owner_engine, other)

    assert await _rows(committed_database, ours, run_id) == {
        "results": 4,
        "evaluations": 4,
        "run_events": 7,
    }
    async with tenant_session(committed_database, ours) as session:
        await session.execute(text("DELETE FROM runs WHERE id = :id"), {"id": run_id})
    assert await _rows(committed_database, ours, run_id) == dict.fromkeys(ADDS, 0)


async def test_the_migration_matches_the_models_and_goes_down_and_up(
    own_database: AsyncEngine,
) -> None:
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None)  # the models are the latest revision's
    async with own_database.connect() as connection:
        assert await connection.run_sync(model_differences, TABLES) == []

    # What the later migrations changed, apart (the models are the latest revision's).
    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, RUN_KEYS)
    async with own_database.connect() as connection:
        later = _named(await connection.run_sync(model_differences, TABLES))
    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, BEFORE)
    async with own_database.connect() as connection:
        before = _named(await connection.run_sync(model_differences, TABLES)) - later
    # The two keys per table and evaluations' index on run_id are back, the run's key gone.
    assert {kind for kind, _ in before} == {"add_fk", "remove_fk", "add_constraint", "remove_index"}

    await migrate(url, None)  # the models are the latest revision's
    async with own_database.connect() as connection:
        assert await connection.run_sync(model_differences, TABLES) == []


def _named(differences: list[Any]) -> set[tuple[str, str]]:
    """Alembic's differences as (kind, the column's, constraint's or index's name): a column's
    is (kind, schema, table, column), the others' (kind, object)."""
    return {
        (diff[0], str((diff[3] if diff[0].endswith("_column") else diff[1]).name))
        for diff in differences
    }
