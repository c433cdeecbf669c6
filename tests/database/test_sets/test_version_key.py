"""A version's cases name their version by a key that is checked at once, except where a
publish defers it (migration 0020_version_key_deferrable): then at commit, where a case naming
no version still fails the whole transaction."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from database.core import Database
from database.migrate import migrate
from database.test_sets import crud
from tests.helpers import register, remove_account, tenant_session
from tests.scratch import downgrade, model_differences

VERSION_KEY = "0020_version_key_deferrable"
BEFORE = "0019_run_keys"
KEY = "fk_test_set_version_cases_version_id_test_set_versions"
ORPHAN = text(
    'INSERT INTO test_set_version_cases (version_id, position, organization_id, "case")'
    " VALUES (:version, 0, :org, '{}')"
)
ORPHANS = text("SELECT count(*) FROM test_set_version_cases WHERE version_id = :version")


async def test_a_case_naming_no_version_is_refused_at_once_or_at_commit(
    app, committed_database: Database, owner_engine: AsyncEngine
) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        account = await register(c)  # committed: the app serves the committed database
    org, version = account.organization_id, uuid.uuid4()
    try:
        with pytest.raises(IntegrityError, match=KEY):  # by the statement itself
            async with tenant_session(committed_database, org) as session:
                await session.execute(ORPHAN, {"version": version, "org": org})

        written = False
        with pytest.raises(IntegrityError, match=KEY):  # deferred: by the commit
            async with tenant_session(committed_database, org) as session:
                await crud.defer_version_key(session)
                await session.execute(ORPHAN, {"version": version, "org": org})
                written = True
        assert written
        async with tenant_session(committed_database, org) as session:
            assert await session.scalar(ORPHANS, {"version": version}) == 0
    finally:
        await remove_account(owner_engine, account)


async def _deferrable(engine: AsyncEngine) -> tuple[bool, bool]:
    async with engine.connect() as connection:
        row = await connection.execute(
            text("SELECT condeferrable, condeferred FROM pg_constraint WHERE conname = :key"),
            {"key": KEY},
        )
        deferrable, deferred = row.one()
    return deferrable, deferred


async def test_the_migration_matches_the_model_and_goes_down_and_up(own_database: AsyncEngine):
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=VERSION_KEY)
    assert await _deferrable(own_database) == (True, False)  # initially immediate
    async with own_database.connect() as connection:
        assert await connection.run_sync(model_differences, ["test_set_version_cases"]) == []

    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, BEFORE)
    assert await _deferrable(own_database) == (False, False)

    await migrate(url, None, revision=VERSION_KEY)
    assert await _deferrable(own_database) == (True, False)
