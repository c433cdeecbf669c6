"""Migration 0007's downgrade: every organization's runs stopped by their budget are cancelled
before the statuses' check loses `stopped`; downgraded as production's owner, a plain role
held to the tenant policies."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from database.migrate import migrate
from tests.scratch import A_RUNS_OWNERS, act_as_plain_owner, downgrade

BEFORE, AFTER = "0006_legacy_run_starts", "0007_verdicts"
PLAIN_OWNER = "assay_plain_owner_verdicts"
_RUN = (
    "INSERT INTO runs (id, organization_id, project_id, test_set_id, test_set_version_id,"
    " metrics, concurrency, repetitions, use_cache, status, total)"
    " VALUES (:run, :org, :project, :set, :version, '[]', 10, 1, false, :status, 1)"
)


async def _runs(engine: AsyncEngine) -> dict[uuid.UUID, str]:
    """Two organizations' runs, one stopped and one completed each: their statuses."""
    runs: dict[uuid.UUID, str] = {}
    for _ in range(2):
        ids = {key: uuid.uuid4() for key in ("org", "project", "set", "version")}
        async with engine.begin() as connection:
            for statement in A_RUNS_OWNERS:
                await connection.execute(text(statement), ids)
            for status in ("stopped", "completed"):
                run = uuid.uuid4()
                await connection.execute(text(_RUN), {**ids, "run": run, "status": status})
                runs[run] = status
    return runs


async def test_stopped_runs_are_cancelled_in_every_organization(
    own_database: AsyncEngine,
) -> None:
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=AFTER)
    runs = await _runs(own_database)
    # Never committed: the role goes with the transaction when the connection closes.
    async with own_database.connect() as connection:
        await act_as_plain_owner(connection, PLAIN_OWNER)
        await connection.run_sync(downgrade, BEFORE)
        await connection.execute(text("RESET ROLE"))
        rows = await connection.execute(text("SELECT id, status FROM runs"))
        statuses: dict[uuid.UUID, str] = {run: status for run, status in rows.all()}
    assert statuses == {
        run: "cancelled" if status == "stopped" else status for run, status in runs.items()
    }
