"""Each evaluation carries its result's case (position), written with it (migration
0026_evaluation_position), so a run's evaluations are read by case without their results: by
every path that writes them, and for the rows written before the migration."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from database.migrate import migrate
from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI
from tests.scratch import (
    A_RUNS_OWNERS,
    downgrade,
    model_differences,
    upgrade,
    upgraded_as_plain_owner,
)

POSITION = "0026_evaluation_position"
BEFORE = "0025_result_text_bytes"
PLAIN_OWNER = "assay_plain_position_owner"
_HAS_POSITION = text("""
SELECT EXISTS (SELECT FROM information_schema.columns
               WHERE table_name = 'evaluations' AND column_name = 'position')
""")

# Each evaluation of the runs with its result's position, as the owner sees them (every row).
_PAIRS = text("""
SELECT e.position, r.position FROM evaluations e JOIN results r ON r.id = e.result_id
WHERE e.run_id = ANY(CAST(:runs AS uuid[])) ORDER BY e.id
""")


async def test_every_path_that_writes_evaluations_writes_their_results_positions(
    lab: Lab, fake: FakeOpenAI, owner_engine: AsyncEngine
) -> None:
    fake.reply = lambda body: "yes" if "pass" in json.dumps(body) else "no"
    target = await lab.openai_model(fake)
    test_set = await lab.test_set(
        [{"input": f"{'pass' if i % 2 == 0 else 'fail'} {i}"} for i in range(12)]
    )
    contains = await lab.metric("contains", parameters={"value": "yes"})
    words = await lab.metric("word-count", parameters={"max": 3})
    run = await lab.run(test_set, target, metric_ids=[contains, words], repetitions=2)
    await lab.wait(run["id"])
    await lab.post(f"/runs/{run['id']}/repeat", {"repetitions": 1, "cases": "all"}, expect=202)
    await lab.wait(run["id"])
    rescore = (await lab.post(f"/runs/{run['id']}/rescore", {"metric_ids": [words]})).json()
    rerun = (await lab.post(f"/runs/{run['id']}/rerun", {}, expect=202)).json()
    for child in (rescore, rerun):
        assert (await lab.wait(child["id"]))["status"] == "completed"

    async with owner_engine.connect() as connection:
        pairs = {
            run_id: (await connection.execute(_PAIRS, {"runs": [uuid.UUID(run_id)]})).all()
            for run_id in (run["id"], rescore["id"], rerun["id"])
        }
    assert [len(found) for found in pairs.values()] == [12 * 3 * 2, 12 * 3, 6 * 3 * 2]
    for found in pairs.values():
        assert [written for written, _ in found] == [result for _, result in found]
    assert {written for written, _ in pairs[run["id"]]} == set(range(12))
    assert {written for written, _ in pairs[rerun["id"]]} == set(range(1, 12, 2))  # the failed


async def _rows_before_the_migration(engine: AsyncEngine) -> dict[uuid.UUID, int]:
    """Two organizations' runs, each with results at scattered positions and two evaluations
    of each result; each evaluation's id with its result's position."""
    expected: dict[uuid.UUID, int] = {}
    for positions in ((3, 7, 0), (9, 4)):
        ids = {key: uuid.uuid4() for key in ("org", "project", "set", "version", "run")}
        async with engine.begin() as connection:
            for statement in (
                *A_RUNS_OWNERS,
                "INSERT INTO runs (id, organization_id, project_id, test_set_id,"
                " test_set_version_id, metrics, concurrency, repetitions, use_cache, status,"
                " total) VALUES (:run, :org, :project, :set, :version, '[]', 1, 1, false,"
                " 'completed', 3)",
            ):
                await connection.execute(text(statement), ids)
            for position in positions:
                result, evaluations = uuid.uuid4(), [uuid.uuid4(), uuid.uuid4()]
                await connection.execute(
                    text(
                        "INSERT INTO results (id, organization_id, run_id, position, repetition,"
                        " input, status, cached) VALUES (:result, :org, :run, :position, 0,"
                        " '{}', 'passed', false)"
                    ),
                    {**ids, "result": result, "position": position},
                )
                for name, evaluation in zip(("a", "b"), evaluations, strict=True):
                    await connection.execute(
                        text(
                            "INSERT INTO evaluations (id, organization_id, result_id, run_id,"
                            " metric_name, metric_type, score, passed) VALUES (:id, :org,"
                            " :result, :run, :name, 'contains', 1, true)"
                        ),
                        {**ids, "id": evaluation, "result": result, "name": name},
                    )
                    expected[evaluation] = position
    return expected


async def test_the_migration_gives_every_organizations_evaluations_their_positions(
    own_database: AsyncEngine,
) -> None:
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=BEFORE)
    expected = await _rows_before_the_migration(own_database)

    # Up, as production's owner: a plain role held to the tenant policies (FORCE), which sees
    # no organization's rows unless the migration lifts that. Down and up again after.
    async with upgraded_as_plain_owner(own_database, PLAIN_OWNER, POSITION) as connection:
        assert await _positions(connection) == expected
        assert await connection.run_sync(model_differences, ["evaluations"]) == []

        await connection.run_sync(downgrade, BEFORE)
        assert await connection.scalar(_HAS_POSITION) is False
        await connection.run_sync(upgrade, POSITION)
        assert await _positions(connection) == expected


async def _positions(connection: AsyncConnection) -> dict[uuid.UUID, int]:
    rows = await connection.execute(text("SELECT id, position FROM evaluations"))
    return {evaluation: position for evaluation, position in rows.all()}
