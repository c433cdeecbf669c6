"""The provider pacing migration goes down and up again on a database of its own."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from database.migrate import migrate
from tests.scratch import downgrade

PACING = "0013_provider_pacing"
BEFORE = "0012_webhooks"


async def _pacing_objects(engine: AsyncEngine) -> tuple[bool, bool, bool]:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT to_regnamespace('assay_private') IS NOT NULL,"
                    " to_regclass('assay_private.provider_pacing') IS NOT NULL,"
                    " to_regprocedure('assay_provider_slot(uuid, integer)') IS NOT NULL"
                )
            )
        ).one()
    return row[0], row[1], row[2]


async def test_the_pacing_migration_downgrades_and_upgrades_again(own_database: AsyncEngine):
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=PACING)
    assert await _pacing_objects(own_database) == (True, True, True)

    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, BEFORE)
    assert await _pacing_objects(own_database) == (False, False, False)

    await migrate(url, None, revision=PACING)
    assert await _pacing_objects(own_database) == (True, True, True)
    async with own_database.connect() as connection:
        model = uuid.uuid4()
        take = text("SELECT assay_provider_slot(:m, 60)")
        assert await connection.scalar(take, {"m": model}) == pytest.approx(0.0, abs=0.05)
        assert await connection.scalar(take, {"m": model}) == pytest.approx(1.0, abs=0.05)
