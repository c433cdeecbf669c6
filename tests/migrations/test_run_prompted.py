"""Migration 0031: every organization's runs that name a prompt version are marked prompted
(so that a run whose prompt goes fails rather than go on without it), the others not; upgraded
as production's owner, a plain role held to the tenant policies."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from database.migrate import migrate
from tests.scratch import (
    A_RUNS_OWNERS,
    downgrade,
    named_differences,
    upgraded_as_plain_owner,
)

BEFORE, AFTER = "0030_claim_skips_kinds", "0031_run_prompted"
PLAIN_OWNER = "assay_plain_owner_prompted"
# A version keeps its slices since 0027.
_VERSION = (
    "INSERT INTO test_set_versions (id, organization_id, test_set_id, number, content_hash,"
    " case_count, slice_values, slice_codes) VALUES (:version, :org, :set, 1, 'h', 0, '{}', '')"
)
_PROMPT = (
    "INSERT INTO prompts (id, organization_id, project_id, name) VALUES (:prompt, :org,"
    " :project, 'p')",
    "INSERT INTO prompt_versions (id, organization_id, prompt_id, number, template, parameters)"
    " VALUES (:prompt_version, :org, :prompt, 1, '{{ input }}', '{}')",
)
_RUN = (
    "INSERT INTO runs (id, organization_id, project_id, test_set_id, test_set_version_id,"
    " prompt_version_id, metrics, concurrency, repetitions, use_cache, status, total)"
    " VALUES (:run, :org, :project, :set, :version, :named, '[]', 10, 1, false, 'queued', 1)"
)


async def _runs(engine: AsyncEngine) -> dict[uuid.UUID, bool]:
    """Two organizations' runs, one with a prompt and one without each: whether each has one."""
    runs: dict[uuid.UUID, bool] = {}
    for _ in range(2):
        ids = {key: uuid.uuid4() for key in ("org", "project", "set", "version", "prompt")}
        ids["prompt_version"] = uuid.uuid4()
        async with engine.begin() as connection:
            for statement in (*A_RUNS_OWNERS[:-1], _VERSION, *_PROMPT):
                await connection.execute(text(statement), ids)
            for named in (ids["prompt_version"], None):
                run = uuid.uuid4()
                await connection.execute(text(_RUN), {**ids, "run": run, "named": named})
                runs[run] = named is not None
    return runs


async def test_runs_naming_a_prompt_version_are_marked_in_every_organization(
    own_database: AsyncEngine,
) -> None:
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=BEFORE)
    runs = await _runs(own_database)
    async with upgraded_as_plain_owner(own_database, PLAIN_OWNER, AFTER) as connection:
        rows = await connection.execute(text("SELECT id, prompted FROM runs"))
        marked: dict[uuid.UUID, bool] = {run: prompted for run, prompted in rows.all()}
        assert marked == runs
        # What the models hold that this revision does not is what later ones add.
        later = await connection.run_sync(named_differences, ["runs"])
        assert ("add_column", "prompted") not in later
        await connection.run_sync(downgrade, BEFORE)
        columns = await connection.scalars(
            text("SELECT column_name FROM information_schema.columns WHERE table_name = 'runs'")
        )
        assert "prompted" not in set(columns)
        before = await connection.run_sync(named_differences, ["runs"])
        assert before - later == {("add_column", "prompted")}
