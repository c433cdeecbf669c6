"""A metric's judge model leads an index (migration 0023_metric_judge_index), holding only the
metrics that name a judge; deleting a model still leaves the metrics it judged without one.
tests/migrations/test_indexes.py holds every later migration to an index per foreign key."""

from __future__ import annotations

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from database.migrate import migrate
from tests.helpers import create_model, create_project, register
from tests.scratch import downgrade, model_differences

JUDGE_INDEX = "0023_metric_judge_index"
BEFORE = "0022_reference_indexes"
INDEX = "ix_metrics_judge_model_id"
_PREDICATE = text("""
SELECT pg_get_expr(i.indpred, i.indrelid)
FROM pg_index i WHERE i.indexrelid::regclass::text = :name
""")


async def test_the_migration_matches_the_model_and_goes_down_and_up(own_database: AsyncEngine):
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=JUDGE_INDEX)
    await _assert_indexed(own_database)

    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, BEFORE)
    async with own_database.connect() as connection:
        missing = await connection.run_sync(model_differences, ["metrics"])
    assert [(diff[0], diff[1].name) for diff in missing] == [("add_index", INDEX)]

    await migrate(url, None, revision=JUDGE_INDEX)
    await _assert_indexed(own_database)


async def _assert_indexed(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        assert await connection.run_sync(model_differences, ["metrics"]) == []
        predicate = (await connection.execute(_PREDICATE, {"name": INDEX})).scalar_one()
    # Alembic's comparison does not look at an index's predicate: the catalog does.
    assert predicate == "(judge_model_id IS NOT NULL)"


async def test_deleting_a_model_leaves_the_metrics_it_judged_without_a_judge(
    client: httpx.AsyncClient,
):
    owner = await register(client)
    project = await create_project(client, owner)
    judge = await create_model(client, owner)
    created = await client.post(
        "/api/v1/metrics",
        json={
            "project_id": project["id"],
            "name": "Refuses",
            "type": "refusal",
            "judge_model_id": judge["id"],
        },
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["judge_model_id"] == judge["id"]

    deleted = await client.delete(f"/api/v1/models/{judge['id']}", headers=owner.headers)
    assert deleted.status_code == 204, deleted.text

    metric = await client.get(f"/api/v1/metrics/{created.json()['id']}", headers=owner.headers)
    assert metric.status_code == 200, metric.text
    assert metric.json()["judge_model_id"] is None
