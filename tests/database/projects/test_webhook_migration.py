"""The webhooks migration on a database of its own: it makes what the models describe, under
row-level security, and goes down and up again."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from database.migrate import migrate
from tests.scratch import downgrade, model_differences

WEBHOOKS = "0012_webhooks"
BEFORE = "0011_audit_log"
TABLES = ("webhooks", "webhook_deliveries")


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
        assert await connection.run_sync(model_differences, TABLES) == []

    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, BEFORE)
    assert await _protected(own_database) == {}

    await migrate(url, None, revision=WEBHOOKS)
    assert await _protected(own_database) == {table: (True, True, 1) for table in TABLES}
