"""A database of its own for a migration test (up, down and up again), on the test server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from alembic import command
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from database.migrate import alembic_config
from database.setup import DatabaseUrls


@asynccontextmanager
async def scratch_database(
    database_urls: DatabaseUrls, owner_engine: AsyncEngine, prefix: str
) -> AsyncIterator[str]:
    """The owner's URL of an empty database, dropped (with its connections) afterwards."""
    name = f"assay_{prefix}_{uuid.uuid4().hex[:8]}"
    async with owner_engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(database_urls.owner).set(database=name).render_as_string(hide_password=False)
    finally:
        async with owner_engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


@asynccontextmanager
async def scratch_engine(
    database_urls: DatabaseUrls, owner_engine: AsyncEngine, prefix: str
) -> AsyncIterator[AsyncEngine]:
    async with scratch_database(database_urls, owner_engine, prefix) as url:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            yield engine
        finally:
            await engine.dispose()


def downgrade(connection: Connection, revision: str, runtime_role: str | None = None) -> None:
    """Alembic's downgrade to `revision`, on a synchronous connection (run_sync)."""
    config = alembic_config()
    config.attributes["connection"] = connection
    if runtime_role is not None:
        config.attributes["runtime_role"] = runtime_role
    command.downgrade(config, revision)
