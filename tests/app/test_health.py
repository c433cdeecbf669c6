from __future__ import annotations

from sqlalchemy.ext.asyncio import create_async_engine

from database.core import Database, set_database
from database.revisions import head_revision


async def test_health_reports_database_and_revision(client):
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "status": "ok",
        "database": "ok",
        "migration_revision": head_revision(),
        "migration_head": head_revision(),
    }


async def test_health_is_503_when_the_database_is_unreachable(client, tmp_path):
    unreachable = Database(
        create_async_engine(f"postgresql+asyncpg://nobody@/none?host={tmp_path}")
    )
    set_database(unreachable)
    response = await client.get("/health")
    await unreachable.dispose()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"].startswith("unreachable")


async def test_liveness_asks_nothing_outside_the_process(client, tmp_path):
    unreachable = Database(
        create_async_engine(f"postgresql+asyncpg://nobody@/none?host={tmp_path}")
    )
    set_database(unreachable)
    response = await client.get("/health/live")
    await unreachable.dispose()
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_a_process_without_its_listener_is_not_ready(client):
    """The test app runs no lifespan: no LISTEN connection, so no live streams, no wake-ups."""
    response = await client.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert (body["database"], body["listener"], body["workers"]) == ("ok", "not started", "none")
