"""/health reads the applied revision in one statement on the driver's connection: a database
without the revision table is reachable but not migrated."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.health import _applied_revision
from database.revisions import head_revision, serves_revision


async def test_the_applied_revision_is_read(runtime_engine: AsyncEngine):
    async with runtime_engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        assert await _applied_revision(driver) == head_revision()
        assert not driver.is_in_transaction()  # one statement, no transaction around it


async def test_no_revision_table_reads_as_not_migrated(runtime_engine: AsyncEngine):
    async with runtime_engine.connect() as connection:
        # Within a transaction that is rolled back: the pooled connection keeps its path.
        await connection.execute(text("SET LOCAL search_path TO pg_temp"))
        driver = (await connection.get_raw_connection()).driver_connection
        assert await _applied_revision(driver) is None
        await connection.rollback()


async def test_health_is_503_when_the_database_is_not_migrated(client, monkeypatch):
    from app import health

    monkeypatch.setattr(health, "_APPLIED_REVISION", "SELECT version_num FROM no_such_table")
    response = await client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["database"], body["migration_revision"]) == (
        "unavailable",
        "ok",
        None,
    )


async def test_a_database_a_newer_release_migrated_is_still_served(client, monkeypatch):
    """A deploy migrates first, while the previous release still serves: its processes were
    all unready at once (an outage until the new ones were up). One behind is not served."""
    from app import health

    monkeypatch.setattr(health, "_APPLIED_REVISION", "SELECT '0999_a_later_release'::text")
    response = await client.get("/health")
    assert response.status_code == 200, response.text
    assert response.json()["migration_revision"] == "0999_a_later_release"
    assert serves_revision("0999_a_later_release")
    assert serves_revision(head_revision())
    assert not serves_revision("0037_claim_takes_turns")  # behind: its migrations pending
    assert not serves_revision(None) and not serves_revision("")
