"""A run's counts (run_counts) follow its results' inserts and deletes: what they count of a
result (its run, organization and status) never changes by an UPDATE (migration
0028_counted_results), while the rest of it may."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from database.core import Database
from database.migrate import migrate
from tests.database.results.conftest import Lab
from tests.database.results.test_run_counts import _counts, _finished_run
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import tenant_session
from tests.scratch import downgrade

REVISION, BEFORE = "0028_counted_results", "0027_version_slices"
TRIGGER = text("SELECT count(*) FROM pg_trigger WHERE tgname = 'assay_results_counted_unchanged'")


@pytest.mark.parametrize(
    "change",
    [
        "status = 'passed'",
        "run_id = gen_random_uuid()",
        "organization_id = gen_random_uuid()",
    ],
)
async def test_what_the_counts_count_of_a_result_never_changes(
    lab: Lab, fake: FakeOpenAI, committed_database: Database, change: str
) -> None:
    done, _ = await _finished_run(lab, fake)
    run_id, organization = done["id"], lab.account.organization_id
    failed = text(f"UPDATE results SET {change} WHERE run_id = :id AND status = 'failed'")

    with pytest.raises(DBAPIError, match="never change"):
        async with tenant_session(committed_database, organization) as session:
            await session.execute(failed, {"id": run_id})
    assert await _counts(committed_database, organization, run_id) == ((5, 3, 2, 0),) * 2


async def test_the_rest_of_a_result_and_an_unchanged_status_may_be_written(
    lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    done, _ = await _finished_run(lab, fake)
    run_id, organization = done["id"], lab.account.organization_id
    async with tenant_session(committed_database, organization) as session:
        rewritten = await session.execute(
            text(
                "UPDATE results SET text_bytes = 1, status = status WHERE run_id = :id RETURNING id"
            ),
            {"id": run_id},
        )
        assert len(rewritten.all()) == 5
    assert await _counts(committed_database, organization, run_id) == ((5, 3, 2, 0),) * 2


async def test_the_migration_goes_down_and_up(own_database: AsyncEngine) -> None:
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=REVISION)
    async with own_database.connect() as connection:
        assert await connection.scalar(TRIGGER) == 1
    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, BEFORE)
        assert await connection.scalar(TRIGGER) == 0
    await migrate(url, None, revision=REVISION)
    async with own_database.connect() as connection:
        assert await connection.scalar(TRIGGER) == 1
