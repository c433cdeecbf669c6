"""An evaluation names the metric it was made with by id alone (migration
0021_evaluation_metric_reference): deleting the metric changes no evaluation, and reads no
other organization's, and going down to the key again forgets the ids of metrics gone."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from database.migrate import migrate
from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI
from tests.scratch import A_RUNS_OWNERS, act_as_plain_owner, downgrade, model_differences

REFERENCE = "0021_evaluation_metric_reference"
BEFORE = "0020_version_key_deferrable"
KEY = "fk_evaluations_metric_id_metrics"
PLAIN_OWNER = "assay_plain_migration_owner"
# What the revisions after this one add to evaluations (the models are the latest revision's).
LATER = [("add_column", "position")]
# A key on evaluations would show in the plan of a metric's deletion as its trigger.
_DELETE_PLAN = "EXPLAIN (ANALYZE, FORMAT JSON) DELETE FROM metrics WHERE id = :id"


async def test_a_deleted_metrics_evaluations_keep_its_id_and_its_verdicts(
    lab: Lab, fake: FakeOpenAI
) -> None:
    fake.reply = lambda body: "yes" if "pass" in json.dumps(body) else "no"
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": "pass 1"}, {"input": "fail 2"}])
    contains = await lab.metric("contains", parameters={"value": "yes"})
    run = await lab.wait((await lab.run(test_set, target, metric_ids=[contains]))["id"])
    before = await lab.results(run["id"])

    deleted = await lab.client.delete(f"/api/v1/metrics/{contains}", headers=lab.account.headers)
    assert deleted.status_code == 204, deleted.text

    after = await lab.results(run["id"])
    assert after == before
    evaluations = [e for result in after for e in result["evaluations"]]
    assert [e["metric_id"] for e in evaluations] == [contains, contains]
    assert sorted(e["passed"] for e in evaluations) == [False, True]
    summary = await lab.get(f"/runs/{run['id']}/summary")
    assert summary["pass_rate"] == 0.5


async def test_deleting_a_metric_reads_no_evaluation(lab: Lab, owner_engine: AsyncEngine) -> None:
    metric = await lab.metric("contains", parameters={"value": "yes"})
    async with owner_engine.begin() as connection:
        plan = (await connection.execute(text(_DELETE_PLAN), {"id": metric})).scalar_one()
        await connection.rollback()
    triggers = [trigger["Constraint Name"] for trigger in plan[0].get("Triggers", [])]
    assert KEY not in triggers
    assert all("evaluations" not in name for name in triggers), triggers


async def test_the_migration_matches_the_model_and_goes_down_and_up(own_database: AsyncEngine):
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=REFERENCE)
    async with own_database.connect() as connection:
        assert _named(await connection.run_sync(model_differences, ["evaluations"])) == LATER
    gone, kept = uuid.uuid4(), uuid.uuid4()
    await _evaluations_naming(own_database, gone=gone, kept=kept)

    # Down, as production's owner: a plain role, held to the tenant policies (FORCE), that
    # sees no organization's metrics unless the migration lifts that.
    async with own_database.connect() as connection:
        transaction = await connection.begin()
        try:
            await act_as_plain_owner(connection, PLAIN_OWNER)
            await connection.run_sync(downgrade, BEFORE)
            restored = await connection.run_sync(model_differences, ["evaluations"])
            await connection.execute(text("RESET ROLE"))
            named = await connection.scalars(text("SELECT metric_id FROM evaluations"))
            assert sorted(map(str, named.all())) == sorted([str(kept), "None"])
            assert _named(restored) == sorted([*LATER, ("remove_fk", KEY)])
        finally:
            await transaction.rollback()  # the role, and the way down, with it

    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, BEFORE)
    await migrate(url, None, revision=REFERENCE)
    async with own_database.connect() as connection:
        assert _named(await connection.run_sync(model_differences, ["evaluations"])) == LATER


def _named(differences: list[Any]) -> list[tuple[str, str]]:
    """Each difference's kind and what it names: a column added, or a constraint."""
    return sorted(
        (kind, found[-1].name if kind == "add_column" else found[0].name)
        for kind, *found in differences
    )


async def _evaluations_naming(engine: AsyncEngine, *, gone: uuid.UUID, kept: uuid.UUID) -> None:
    """Two evaluations of one result: one names a metric that exists, one a deleted metric."""
    ids = {key: uuid.uuid4() for key in ("org", "project", "set", "version", "run", "result")}
    async with engine.begin() as connection:
        for statement in (
            *A_RUNS_OWNERS,
            "INSERT INTO runs (id, organization_id, project_id, test_set_id,"
            " test_set_version_id, metrics, concurrency, repetitions, use_cache, status, total)"
            " VALUES (:run, :org, :project, :set, :version, '[]', 1, 1, false, 'completed', 1)",
            "INSERT INTO metrics (id, organization_id, project_id, name, type, parameters,"
            " threshold, operator, negate, weight) VALUES (:kept, :org, :project, 'kept',"
            " 'contains', '{}', 0.5, '>=', false, 1)",
            "INSERT INTO results (id, organization_id, run_id, position, repetition, input,"
            " status, cached) VALUES (:result, :org, :run, 0, 0, '{}', 'passed', false)",
            "INSERT INTO evaluations (id, organization_id, result_id, run_id, metric_id,"
            " metric_name, metric_type, score, passed) VALUES (gen_random_uuid(), :org,"
            " :result, :run, :gone, 'gone', 'contains', 1, true), (gen_random_uuid(), :org,"
            " :result, :run, :kept, 'kept', 'contains', 1, true)",
        ):
            await connection.execute(text(statement), {**ids, "gone": gone, "kept": kept})
