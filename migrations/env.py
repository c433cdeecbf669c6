"""Alembic environment. Normally handed an open connection by database/migrate.py; when the
alembic CLI runs it directly, it resolves the owner URL from the settings the same way."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, text

import database.registry  # noqa: F401  (imports every model so metadata is complete)
from database.core import Base
from database.migrate import MIGRATION_LOCK_KEY
from migrations.access import grant_runtime_access

config = context.config


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()
        grant_runtime_access(connection, config.attributes.get("runtime_role"))


async def run_from_settings() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from database.setup import resolve_urls

    urls = await resolve_urls()
    config.attributes["runtime_role"] = urls.runtime_role
    engine = create_async_engine(urls.owner, poolclass=NullPool)
    async with engine.begin() as connection:
        await connection.run_sync(run_migrations)
    await engine.dispose()


existing = config.attributes.get("connection")
if existing is not None:
    run_migrations(existing)
else:
    asyncio.run(run_from_settings())
