"""Every migration undone, from the head to an empty schema, with rows in the tables a
downgrade changes or checks again, and every one applied again after."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from database.migrate import migrate
from database.revisions import head_revision
from tests.scratch import downgrade

# An organization's member, and a run stopped by its budget (0007 turns it back to cancelled)
# whose evaluation names a metric that is gone (0021 forgets it before its key comes back).
_ROWS = (
    "INSERT INTO users (id, email, name, password_hash) VALUES (:user, 'u@example.com', 'u', 'h')",
    "INSERT INTO organizations (id, name) VALUES (:org, 'o')",
    "INSERT INTO memberships (id, organization_id, user_id, role)"
    " VALUES (:membership, :org, :user, 'owner')",
    "INSERT INTO projects (id, organization_id, name) VALUES (:project, :org, 'p')",
    "INSERT INTO test_sets (id, organization_id, project_id, name)"
    " VALUES (:set, :org, :project, 's')",
    "INSERT INTO test_set_versions (id, organization_id, test_set_id, number, content_hash,"
    " case_count, slice_values, slice_codes) VALUES (:version, :org, :set, 1, 'h', 0, '{}', '')",
    "INSERT INTO runs (id, organization_id, project_id, test_set_id, test_set_version_id,"
    " metrics, concurrency, repetitions, use_cache, status, total)"
    " VALUES (:run, :org, :project, :set, :version, '[]', 10, 1, false, 'stopped', 1)",
    "INSERT INTO results (id, organization_id, run_id, position, repetition, input, status,"
    " cached) VALUES (:result, :org, :run, 0, 0, '{}', 'passed', false)",
    "INSERT INTO evaluations (id, organization_id, result_id, run_id, metric_id, metric_name,"
    " metric_type, score, passed, position)"
    " VALUES (:evaluation, :org, :result, :run, :metric, 'm', 'exact', 1, true, 0)",
)
_LEFT_BEHIND = (
    "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
    " WHERE n.nspname = 'public' AND c.relname NOT LIKE 'alembic_version%'"
    " UNION ALL SELECT CAST(CAST(p.oid AS regprocedure) AS text) FROM pg_proc AS p"
    " JOIN pg_namespace AS n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
    " AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.objid = p.oid AND d.deptype = 'e')"
)


async def _add_rows(connection: AsyncConnection) -> None:
    names = ("user", "org", "membership", "project", "set", "version", "run", "result")
    ids = {name: uuid.uuid4() for name in (*names, "evaluation", "metric")}
    for statement in _ROWS:
        await connection.execute(text(statement), ids)


async def test_head_to_base_and_back_to_head(own_database: AsyncEngine) -> None:
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None)
    async with own_database.begin() as connection:
        await _add_rows(connection)
    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, "base")
        left_behind = await connection.scalars(text(_LEFT_BEHIND))
        assert list(left_behind) == []
    outcome = await migrate(url, None)
    assert (outcome.before, outcome.after) == (None, head_revision())
