"""Migration 0036_shorter_key_hints: hints stored under the old rule are cut to what the new
one shows of the shortest key they could stand for (in a database of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from database.migrate import migrate
from database.setup import DatabaseUrls
from tests.scratch import scratch_database

ORGANIZATION = "00000000-0000-0000-0000-00000000000b"
# Hints as the old rule made them: a 9-character key's, a 12-character one's, a 48-character
# one's, an 8-character one's, one showing nothing, and no key at all. The first could be any.
OLD_HINTS = {"abc…fghi": "…", "tok…c123": "…", "sk-…wxyz": "…", "…gh": "…", "…": "…", None: None}


@pytest.fixture
async def own_database(
    database_urls: DatabaseUrls, owner_engine: AsyncEngine
) -> AsyncIterator[str]:
    async with scratch_database(database_urls, owner_engine, "keyhints") as url:
        yield url


async def test_stored_hints_are_cut_to_the_new_rule(own_database, database_urls):
    await migrate(own_database, database_urls.runtime_role, revision="0035_api_key_makers")
    engine = create_async_engine(own_database, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("SELECT set_config('app.organization_id', :org, true)"),
                {"org": ORGANIZATION},
            )
            await connection.execute(
                text("INSERT INTO organizations (id, name) VALUES (:org, 'o')"),
                {"org": ORGANIZATION},
            )
            for number, hint in enumerate(OLD_HINTS):
                await connection.execute(
                    text(
                        "INSERT INTO model_configs (id, organization_id, name, provider,"
                        " parameters, timeout_seconds, api_key_hint)"
                        " VALUES (gen_random_uuid(), :org, :name, 'demo', '{}', 30, :hint)"
                    ),
                    {"org": ORGANIZATION, "name": f"m{number}", "hint": hint},
                )
        await migrate(own_database, database_urls.runtime_role, revision="0036_shorter_key_hints")
        async with engine.begin() as connection:
            await connection.execute(
                text("SELECT set_config('app.organization_id', :org, true)"),
                {"org": ORGANIZATION},
            )
            rows = await connection.execute(
                text("SELECT name, api_key_hint FROM model_configs ORDER BY name")
            )
            hints = [row.api_key_hint for row in rows]
    finally:
        await engine.dispose()
    assert hints == list(OLD_HINTS.values())
