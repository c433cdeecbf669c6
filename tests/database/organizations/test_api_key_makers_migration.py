"""Migration 0035_api_key_makers: the key a key was made with, as the model has it, down and up
again over a key that names its maker (in a database of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from database.migrate import migrate
from database.setup import DatabaseUrls
from tests.scratch import downgrade, model_differences, scratch_database

REVISION = "0035_api_key_makers"
BEFORE = "0034_response_cache_retention"
# Two keys of one organization, the second made with the first, written as the owner acting
# for the organization (row-level security is forced on the owner too).
KEYS = """
    SELECT set_config('app.organization_id', '00000000-0000-0000-0000-00000000000a', true);
    INSERT INTO organizations (id, name) VALUES ('00000000-0000-0000-0000-00000000000a', 'o');
    INSERT INTO api_keys (id, organization_id, name, role, display_prefix, key_hash)
      VALUES ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-00000000000a',
              'maker', 'admin', 'ak_1', 'hash-1');
    INSERT INTO api_keys (id, organization_id, name, role, display_prefix, key_hash,
                          created_with_key_id)
      VALUES ('00000000-0000-0000-0000-0000000000a2', '00000000-0000-0000-0000-00000000000a',
              'made', 'admin', 'ak_2', 'hash-2', '00000000-0000-0000-0000-0000000000a1');
"""


@pytest.fixture
async def own_database(
    database_urls: DatabaseUrls, owner_engine: AsyncEngine
) -> AsyncIterator[str]:
    async with scratch_database(database_urls, owner_engine, "keymakers") as url:
        yield url


async def test_the_migration_matches_the_model_and_goes_down_and_up(own_database, database_urls):
    await migrate(own_database, database_urls.runtime_role, revision=REVISION)
    engine = create_async_engine(own_database, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            assert await connection.run_sync(model_differences, ["api_keys"]) == []
            for statement in filter(str.strip, KEYS.split(";")):
                await connection.execute(text(statement))
        async with engine.begin() as connection:
            await connection.run_sync(downgrade, BEFORE, database_urls.runtime_role)
        async with engine.connect() as connection:
            columns = await connection.scalar(
                text(
                    "SELECT count(*) FROM information_schema.columns"
                    " WHERE table_name = 'api_keys' AND column_name = 'created_with_key_id'"
                )
            )
            assert columns == 0
    finally:
        await engine.dispose()
    await migrate(own_database, database_urls.runtime_role, revision=REVISION)
    engine = create_async_engine(own_database, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(model_differences, ["api_keys"]) == []
    finally:
        await engine.dispose()
