"""Every foreign key of runs, projects, prompt labels and test sets' metrics leads an index
(migration 0022_reference_indexes; tests/migrations/test_indexes.py holds later migrations to
it): the migration matches the models, down and up again, and a nullable reference's index
holds only the rows that name something."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from database.migrate import migrate
from tests.scratch import downgrade, model_differences, named_differences

REFERENCE_INDEXES = "0022_reference_indexes"
BEFORE = "0021_evaluation_metric_reference"
TABLES = ["runs", "projects", "prompt_labels", "test_set_metrics"]
PARTIAL = {
    "ix_projects_baseline_run_id": "baseline_run_id",
    "ix_projects_default_judge_model_id": "default_judge_model_id",
    "ix_projects_default_target_model_id": "default_target_model_id",
    "ix_runs_outputs_from_run_id": "outputs_from_run_id",
    "ix_runs_parent_run_id": "parent_run_id",
    "ix_runs_prompt_version_id": "prompt_version_id",
    "ix_runs_simulator_model_id": "simulator_model_id",
    "ix_runs_target_model_id": "target_model_id",
}
WHOLE = [
    "ix_prompt_labels_version_id",
    "ix_runs_test_set_version_id",
    "ix_test_set_metrics_metric_id",
]
# Alembic's comparison does not look at an index's predicate: the catalog does.
_PREDICATES = text("""
SELECT i.indexrelid::regclass::text, pg_get_expr(i.indpred, i.indrelid)
FROM pg_index i WHERE i.indexrelid::regclass::text = ANY(:names)
""")


async def test_the_migration_matches_the_models_and_goes_down_and_up(own_database: AsyncEngine):
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None)  # the models are the latest revision's
    async with own_database.connect() as connection:
        assert await connection.run_sync(model_differences, TABLES) == []

    # What later migrations changed of these tables (a run's `prompted`, say), apart.
    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, REFERENCE_INDEXES)
    async with own_database.connect() as connection:
        later = await connection.run_sync(named_differences, TABLES)
    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, BEFORE)
    async with own_database.connect() as connection:
        missing = await connection.run_sync(named_differences, TABLES) - later
    assert missing == {("add_index", name) for name in [*PARTIAL, *WHOLE]}

    await migrate(url, None, revision=REFERENCE_INDEXES)
    async with own_database.connect() as connection:
        assert await connection.run_sync(named_differences, TABLES) == later


async def test_a_nullable_references_index_holds_the_rows_that_name_something(
    owner_engine: AsyncEngine,
) -> None:
    async with owner_engine.connect() as connection:
        found = await connection.execute(_PREDICATES, {"names": [*PARTIAL, *WHOLE]})
        predicates: dict[str, str | None] = {name: where for name, where in found.all()}
    assert predicates == {
        **{name: f"({column} IS NOT NULL)" for name, column in PARTIAL.items()},
        **dict.fromkeys(WHOLE),
    }
