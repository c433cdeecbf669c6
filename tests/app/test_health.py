from __future__ import annotations

from sqlalchemy.ext.asyncio import create_async_engine

from database.core import Database, set_database
from database.migrate import head_revision


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
