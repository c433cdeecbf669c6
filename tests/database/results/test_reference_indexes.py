"""Every foreign key of runs and projects leads an index (migration 0022_reference_indexes;
tests/migrations/test_indexes.py holds later migrations to it): the migration matches the
models, down and up again."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from database.migrate import migrate
from tests.scratch import downgrade, model_differences

REFERENCE_INDEXES = "0022_reference_indexes"
BEFORE = "0021_evaluation_metric_reference"
TABLES = ["runs", "projects"]


async def test_the_migration_matches_the_models_and_goes_down_and_up(own_database: AsyncEngine):
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=REFERENCE_INDEXES)
    async with own_database.connect() as connection:
        assert await connection.run_sync(model_differences, TABLES) == []

    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, BEFORE)
    async with own_database.connect() as connection:
        missing = await connection.run_sync(model_differences, TABLES)
    assert sorted(diff[1].name for diff in missing if diff[0] == "add_index") == [
        "ix_projects_baseline_run_id",
        "ix_projects_default_judge_model_id",
        "ix_projects_default_target_model_id",
        "ix_runs_outputs_from_run_id",
        "ix_runs_parent_run_id",
        "ix_runs_prompt_version_id",
        "ix_runs_simulator_model_id",
        "ix_runs_target_model_id",
        "ix_runs_test_set_version_id",
    ]
    assert len(missing) == 9

    await migrate(url, None, revision=REFERENCE_INDEXES)
    async with own_database.connect() as connection:
        assert await connection.run_sync(model_differences, TABLES) == []
