"""A run's counts are kept on its row by triggers on `results`: they equal a count of its results
however they are written or deleted, and the migration fills them in for runs made before it."""

from __future__ import annotations

import importlib.util
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

import database.registry  # noqa: F401  (every table known to the metadata)
from database.core import Base, Database
from database.migrate import migrate
from database.setup import DatabaseUrls
from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import tenant_session
from tests.scratch import downgrade, scratch_engine

MIGRATION = Path(__file__).parents[3] / "migrations/versions/2026_12_02_run_counts.py"
KEPT = text(
    "SELECT results_done, results_passed, results_failed, results_errored FROM runs WHERE id = :id"
)
COUNTED = text(
    "SELECT count(*), count(*) FILTER (WHERE status = 'passed'),"
    " count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'errored')"
    " FROM results WHERE run_id = :id"
)


def _migration() -> Any:
    spec = importlib.util.spec_from_file_location("run_counts_migration", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _counts(database: Database, organization_id: uuid.UUID, run_id: str) -> tuple:
    async with tenant_session(database, organization_id) as session:
        kept = tuple((await session.execute(KEPT, {"id": run_id})).one())
        counted = tuple((await session.execute(COUNTED, {"id": run_id})).one())
    return kept, counted


async def test_a_runs_counts_are_its_results_by_status(
    lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    fake.reply = lambda body: "yes" if "pass" in json.dumps(body) else "no"
    target = await lab.openai_model(fake)
    cases = [{"input": f"pass {i}"} for i in range(3)] + [{"input": f"x {i}"} for i in range(2)]
    test_set = await lab.test_set(cases)
    contains = await lab.metric("contains", parameters={"value": "yes"})
    run = await lab.run(test_set, target, metric_ids=[contains])
    done = await lab.wait(run["id"])
    organization = lab.account.organization_id

    kept, counted = await _counts(committed_database, organization, run["id"])
    assert kept == counted == (5, 3, 2, 0)
    assert done["counts"] | {"total": 5} == {
        "total": 5,
        "done": 5,
        "passed": 3,
        "failed": 2,
        "errored": 0,
    }

    async with tenant_session(committed_database, organization) as session:
        await session.execute(
            text("DELETE FROM results WHERE run_id = :id AND status = 'failed'"), {"id": run["id"]}
        )
    assert await _counts(committed_database, organization, run["id"]) == ((3, 3, 0, 0),) * 2

    # The migration's own statement fills in counts lost (as for runs made before it).
    async with tenant_session(committed_database, organization) as session:
        await session.execute(text("UPDATE runs SET results_done = 0, results_passed = 0"))
        await session.execute(text(_migration().BACKFILL))
    assert await _counts(committed_database, organization, run["id"]) == ((3, 3, 0, 0),) * 2

    async with tenant_session(committed_database, organization) as session:  # results go too
        await session.execute(text("DELETE FROM runs WHERE id = :id"), {"id": run["id"]})
        left = await session.scalar(COUNTED, {"id": run["id"]})
    assert left == 0


@pytest.fixture
async def own_database(
    database_urls: DatabaseUrls, owner_engine: AsyncEngine
) -> AsyncIterator[AsyncEngine]:
    async with scratch_engine(database_urls, owner_engine, "run_counts") as engine:
        yield engine


def _differences(connection: Connection) -> list[Any]:
    def ours(item: Any, name: str | None, kind: str, reflected: bool, compared: Any) -> bool:
        table = name if kind == "table" else getattr(getattr(item, "table", None), "name", None)
        return table == "runs"

    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": ours}
    )
    return list(compare_metadata(context, Base.metadata))


async def _triggers(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            await connection.scalar(
                text("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'assay_results_%'")
            )
        )


async def test_the_migration_matches_the_model_and_goes_down_and_up(
    own_database: AsyncEngine,
) -> None:
    migration = _migration()
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=migration.revision)
    assert await _triggers(own_database) == 2
    async with own_database.connect() as connection:
        assert await connection.run_sync(_differences) == []

    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, migration.down_revision)
    assert await _triggers(own_database) == 0
    async with own_database.connect() as connection:
        missing = await connection.run_sync(_differences)
    assert {diff[3].name for diff in missing if diff[0] == "add_column"} == set(migration.COLUMNS)

    await migrate(url, None, revision=migration.revision)
    assert await _triggers(own_database) == 2
