"""The retention migration: what its function may do and who may call it, and its way down and up
again (in a database of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.engine.maintenance import RetentionPolicy, prune_batch
from database.migrate import migrate
from database.setup import DatabaseUrls
from tests.scratch import downgrade, model_differences, scratch_database

REVISION = "0014_retention"
BEFORE = "0013_provider_pacing"
PRESENCE = text(
    """
    SELECT
      (SELECT count(*) FROM pg_proc WHERE proname = 'assay_retention_prune') AS functions,
      (SELECT count(*) FROM organizations
        WHERE id = '00000000-0000-0000-0000-000000000000') AS system_organizations,
      (SELECT count(*) FROM pg_policy WHERE polname IN ('retention_read', 'retention_delete'))
        AS policies,
      (SELECT count(*) FROM pg_indexes
        WHERE indexname IN ('ix_jobs_finished', 'ix_refresh_tokens_expires_at')) AS indexes,
      (SELECT relforcerowsecurity FROM pg_class WHERE relname = 'organizations') AS forced
    """
)


@pytest.fixture
async def own_database(
    database_urls: DatabaseUrls, owner_engine: AsyncEngine
) -> AsyncIterator[str]:
    async with scratch_database(database_urls, owner_engine, "retention") as url:
        yield url


async def _presence(url: str) -> tuple[int, int, int, int, bool]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            row = (await connection.execute(PRESENCE)).one()
    finally:
        await engine.dispose()
    return (row.functions, row.system_organizations, row.policies, row.indexes, row.forced)


async def test_the_migration_goes_down_and_up_again(own_database, database_urls):
    await migrate(own_database, database_urls.runtime_role, revision=REVISION)
    # One read and one delete policy per table: 7 read, 6 delete.
    assert await _presence(own_database) == (1, 1, 13, 2, True)

    engine = create_async_engine(own_database, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(downgrade, BEFORE, database_urls.runtime_role)
    finally:
        await engine.dispose()
    assert await _presence(own_database) == (0, 0, 0, 0, True)

    await migrate(own_database, database_urls.runtime_role, revision=REVISION)
    assert await _presence(own_database) == (1, 1, 13, 2, True)


async def test_a_period_under_a_day_is_refused(database):
    with pytest.raises(DBAPIError, match="at least 1"):
        async with database.transaction() as session:
            await prune_batch(session, RetentionPolicy(run_events_days=30, jobs_days=0))


async def test_the_function_runs_narrowly(owner_engine):
    async with owner_engine.connect() as conn:
        function = (
            await conn.execute(
                text(
                    "SELECT p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner) AS owner,"
                    " has_function_privilege('assay_app', p.oid, 'EXECUTE') AS runtime,"
                    " has_function_privilege('assay_auth', p.oid, 'EXECUTE') AS other,"
                    " r.rolsuper, r.rolbypassrls, r.rolcanlogin"
                    " FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner"
                    " WHERE p.proname = 'assay_retention_prune'"
                )
            )
        ).one()
        deletable = (
            (
                await conn.execute(
                    text(
                        "SELECT table_name FROM information_schema.role_table_grants"
                        " WHERE grantee = 'assay_maintenance' AND privilege_type = 'DELETE'"
                        " ORDER BY 1"
                    )
                )
            )
            .scalars()
            .all()
        )
        # It reads what its cut-offs and its keep rules compare, not what rows carry.
        readable = (
            await conn.execute(
                text(
                    "SELECT"
                    " has_column_privilege('assay_maintenance', 'jobs', 'kind', 'SELECT'),"
                    " has_column_privilege('assay_maintenance', 'jobs', 'payload', 'SELECT'),"
                    " has_column_privilege('assay_maintenance', 'runs', 'status', 'SELECT'),"
                    " has_column_privilege('assay_maintenance', 'jobs', 'last_error', 'SELECT'),"
                    " has_column_privilege('assay_maintenance', 'webhook_deliveries', 'payload',"
                    "  'SELECT'),"
                    " has_column_privilege('assay_maintenance', 'runs', 'name', 'SELECT'),"
                    " has_column_privilege('assay_maintenance', 'response_cache', 'created_at',"
                    "  'SELECT'),"
                    " has_column_privilege('assay_maintenance', 'response_cache', 'output',"
                    "  'SELECT')"
                )
            )
        ).one()
        system_members = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM memberships"
                    " WHERE organization_id = '00000000-0000-0000-0000-000000000000'"
                )
            )
        ).scalar_one()
    assert function.prosecdef and function.owner == "assay_maintenance"
    assert "search_path=public, pg_temp" in function.proconfig
    assert function.runtime and not function.other
    assert not (function.rolsuper or function.rolbypassrls or function.rolcanlogin)
    assert tuple(readable) == (True, True, True, False, False, False, True, False)
    # Results, runs and tests are out of its reach.
    assert deletable == [
        "auth_sessions",
        "invitations",
        "jobs",
        "refresh_tokens",
        "response_cache",
        "run_events",
        "webhook_deliveries",
    ]
    assert system_members == 0


async def test_the_recheck_goes_down_and_up_again(own_database, database_urls):
    """0029_prune_recheck changes the function's one delete of run events, in place."""
    rechecks = text(
        "SELECT prosrc LIKE '%AND EXISTS (SELECT 1 FROM runs r%' FROM pg_proc"
        " WHERE proname = 'assay_retention_prune'"
    )

    async def rechecked() -> bool:
        engine = create_async_engine(own_database, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return bool(await connection.scalar(rechecks))
        finally:
            await engine.dispose()

    await migrate(own_database, database_urls.runtime_role, revision="0029_prune_recheck")
    assert await rechecked()
    engine = create_async_engine(own_database, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(downgrade, "0028_counted_results", database_urls.runtime_role)
    finally:
        await engine.dispose()
    assert not await rechecked()
    assert await _presence(own_database) == (1, 1, 13, 2, True)  # the rest as it was
    await migrate(own_database, database_urls.runtime_role, revision="0029_prune_recheck")
    assert await rechecked()


async def test_the_cache_period_goes_down_and_up_again(own_database, database_urls):
    """0034_response_cache_retention gives the function a period for cached answers, and the
    maintenance role the cache's key and age; its way down takes both back."""
    state = text(
        "SELECT pronargs,"
        " has_table_privilege('assay_maintenance', 'response_cache', 'DELETE') AS deletes,"
        " (SELECT count(*) FROM pg_policy WHERE polrelid = 'response_cache'::regclass"
        "   AND polname LIKE 'retention_%') AS policies,"
        " (SELECT count(*) FROM pg_indexes"
        "   WHERE indexname = 'ix_response_cache_created_at') AS indexes"
        " FROM pg_proc WHERE proname = 'assay_retention_prune'"
    )

    async def cache_state() -> tuple[int, bool, int, int]:
        engine = create_async_engine(own_database, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                row = (await connection.execute(state)).one()
                if row.indexes:  # the index as the model declares it
                    differences = await connection.run_sync(model_differences, ["response_cache"])
                    assert differences == []
        finally:
            await engine.dispose()
        return (row.pronargs, row.deletes, row.policies, row.indexes)

    revision = "0034_response_cache_retention"
    await migrate(own_database, database_urls.runtime_role, revision=revision)
    assert await cache_state() == (7, True, 2, 1)
    engine = create_async_engine(own_database, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(
                downgrade, "0033_run_request_keys", database_urls.runtime_role
            )
    finally:
        await engine.dispose()
    assert await cache_state() == (6, False, 0, 0)
    await migrate(own_database, database_urls.runtime_role, revision=revision)
    assert await cache_state() == (7, True, 2, 1)
