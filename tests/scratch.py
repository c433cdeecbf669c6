"""A database of its own for a migration test (up, down and up again), on the test server, and
what the models say of some of its tables that it does not."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

import database.registry  # noqa: F401  (every table known to the metadata)
from database.core import Base
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


def upgrade(connection: Connection, revision: str) -> None:
    """Alembic's upgrade to `revision`, on a synchronous connection (run_sync)."""
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def downgrade(connection: Connection, revision: str, runtime_role: str | None = None) -> None:
    """Alembic's downgrade to `revision`, on a synchronous connection (run_sync)."""
    config = alembic_config()
    config.attributes["connection"] = connection
    if runtime_role is not None:
        config.attributes["runtime_role"] = runtime_role
    command.downgrade(config, revision)


def model_differences(connection: Connection, tables: Collection[str]) -> list[Any]:
    """Alembic's differences between the models of `tables` and the database (run_sync)."""

    def ours(item: Any, name: str | None, kind: str, reflected: bool, compared: Any) -> bool:
        table = name if kind == "table" else getattr(getattr(item, "table", None), "name", None)
        return table in tables

    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": ours}
    )
    with warnings.catch_warnings():
        # Reflecting a check added NOT VALID (tests.has_input, migration 0024) hands its
        # `dialect_options` to a constraint that cannot take them; checks are not compared.
        warnings.filterwarnings("ignore", "Can't validate argument 'dialect_options'")
        return list(compare_metadata(context, Base.metadata))


def named_differences(connection: Connection, tables: Collection[str]) -> set[tuple[str, str]]:
    """`model_differences` as (kind, the column's or index's name) (run_sync)."""
    return {
        (diff[0], str((diff[3] if diff[0].endswith("_column") else diff[1]).name))
        for diff in model_differences(connection, tables)
    }


# What a run needs before it, as rows of a scratch database's own (its owner writes them), named
# by the parameters :org, :project, :set and :version; for revisions before 0027_version_slices
# (a version since keeps its slices).
A_RUNS_OWNERS = (
    "INSERT INTO organizations (id, name) VALUES (:org, 'o')",
    "INSERT INTO projects (id, organization_id, name) VALUES (:project, :org, 'p')",
    "INSERT INTO test_sets (id, organization_id, project_id, name)"
    " VALUES (:set, :org, :project, 's')",
    "INSERT INTO test_set_versions (id, organization_id, test_set_id, number, content_hash,"
    " case_count) VALUES (:version, :org, :set, 1, 'h', 0)",
)


# Every relation and function of the schema (but an extension's) handed to `role`, which may
# make new ones in it, as the owner that made them may (a migration's grants name all tables).
_OWNED_BY = """
DO $$
DECLARE relation record; function record;
BEGIN
    FOR relation IN
        SELECT c.relname, c.relkind FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
    LOOP
        EXECUTE format('ALTER %s %I OWNER TO {role}',
                       CASE relation.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                       relation.relname);
    END LOOP;
    FOR function IN
        SELECT CAST(p.oid AS regprocedure) AS signature FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND NOT EXISTS (
            SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO {role}', function.signature);
    END LOOP;
    GRANT CREATE ON SCHEMA public TO {role};
END $$
"""


async def act_as_plain_owner(connection: AsyncConnection, role: str) -> None:
    """Within the connection's transaction (roll it back to drop the role): every relation
    handed to a new plain `role`, held to the tenant policies by FORCE as production's owner
    is, which sees no organization's rows unless a migration lifts that; and the connection
    acting as it until RESET ROLE."""
    await connection.execute(text(f"CREATE ROLE {role} NOSUPERUSER NOBYPASSRLS"))
    await connection.execute(text(_OWNED_BY.format(role=role)))
    await connection.execute(text(f"SET LOCAL ROLE {role}"))


@asynccontextmanager
async def upgraded_as_plain_owner(
    engine: AsyncEngine, role: str, revision: str
) -> AsyncIterator[AsyncConnection]:
    """A connection that has upgraded the database to `revision` as production's owner does
    (a plain `role`, held to the tenant policies by FORCE, which sees no organization's rows
    unless the migration lifts that), acting as itself again; in a transaction rolled back at
    the end, the role with it."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            await act_as_plain_owner(connection, role)
            await connection.run_sync(upgrade, revision)
            await connection.execute(text("RESET ROLE"))
            yield connection
        finally:
            await transaction.rollback()
