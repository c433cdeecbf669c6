"""The webhooks migration on a database of its own: it makes what the models describe, under
row-level security, and goes down and up again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

import database.registry  # noqa: F401  (every table known to the metadata)
from database.core import Base
from database.migrate import migrate
from database.setup import DatabaseUrls
from tests.scratch import downgrade, scratch_engine

WEBHOOKS = "0012_webhooks"
BEFORE = "0011_audit_log"
TABLES = ("webhooks", "webhook_deliveries")


@pytest.fixture
async def own_database(
    database_urls: DatabaseUrls, owner_engine: AsyncEngine
) -> AsyncIterator[AsyncEngine]:
    async with scratch_engine(database_urls, owner_engine, "webhooks") as engine:
        yield engine


def _differences(connection: Connection) -> list[Any]:
    """What the models of the webhook tables say that the database does not."""

    def ours(item: Any, name: str | None, kind: str, reflected: bool, compared: Any) -> bool:
        table = name if kind == "table" else getattr(getattr(item, "table", None), "name", None)
        return table in TABLES

    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": ours}
    )
    return list(compare_metadata(context, Base.metadata))


async def _protected(engine: AsyncEngine) -> dict[str, tuple[bool, bool, int]]:
    """Each webhook table there is: (RLS enabled, forced, tenant policies)."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
                " (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid"
                "   AND pg_get_expr(p.polqual, p.polrelid) LIKE '%assay_current_organization()%')"
                " FROM pg_class c WHERE c.relname = ANY(:tables) AND c.relkind = 'r'"
            ),
            {"tables": list(TABLES)},
        )
        return {row[0]: (row[1], row[2], row[3]) for row in rows.all()}


async def test_the_webhooks_migration_matches_the_models_and_goes_down_and_up(
    own_database: AsyncEngine,
) -> None:
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=WEBHOOKS)
    assert await _protected(own_database) == {table: (True, True, 1) for table in TABLES}
    async with own_database.connect() as connection:
        assert await connection.run_sync(_differences) == []

    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, BEFORE)
    assert await _protected(own_database) == {}

    await migrate(url, None, revision=WEBHOOKS)
    assert await _protected(own_database) == {table: (True, True, 1) for table in TABLES}
