"""Migration 0038_invitation_key_makers: the key an invitation was sent with, as the model has
it, down and up again (in a database of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from database.migrate import migrate
from database.setup import DatabaseUrls
from tests.scratch import downgrade, model_differences, scratch_database

REVISION = "0038_invitation_key_makers"
BEFORE = "0037_claim_takes_turns"
COLUMN = (
    "SELECT count(*) FROM information_schema.columns"
    " WHERE table_name = 'invitations' AND column_name = 'created_with_key_id'"
)


@pytest.fixture
async def own_database(
    database_urls: DatabaseUrls, owner_engine: AsyncEngine
) -> AsyncIterator[str]:
    async with scratch_database(database_urls, owner_engine, "invitationmakers") as url:
        yield url


async def test_the_migration_matches_the_model_and_goes_down_and_up(own_database, database_urls):
    for _ in range(2):  # up, then down and up again
        await migrate(own_database, database_urls.runtime_role, revision=REVISION)
        engine = create_async_engine(own_database, poolclass=NullPool)
        try:
            async with engine.begin() as connection:
                assert await connection.run_sync(model_differences, ["invitations"]) == []
                assert await connection.scalar(text(COLUMN)) == 1
                await connection.run_sync(downgrade, BEFORE, database_urls.runtime_role)
                assert await connection.scalar(text(COLUMN)) == 0
        finally:
            await engine.dispose()
