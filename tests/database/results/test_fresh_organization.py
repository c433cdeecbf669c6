"""A run's summary as the run ends, before the planner's statistics know its organization:
every statement of it must still be planned in linear time."""

from __future__ import annotations

import pytest

from database.core import Tenant
from tests.database.results.conftest import Lab
from tests.helpers import register, remove_account
from tests.planner import analyze, rows_handled, statements

CASES = 1000
# Rows a linear plan handles for a 1,000-case run: a few passes over its results and their
# evaluations. Planned as nested loops matching every row against every other, it handles
# half a million or more.
LINEAR = 20 * CASES


def _cases(n: int) -> list[dict[str, str]]:
    return [
        {"input": f"question {i}", "expected_output": f"question {i}", "topic": f"t{i % 5}"}
        for i in range(n)
    ]


async def _finished_run(lab: Lab, cases: int) -> str:
    target = await lab.model(provider="demo")
    test_set = await lab.test_set(_cases(cases))
    metrics = [await lab.metric("contains"), await lab.metric("word-count", parameters={"max": 3})]
    run = await lab.run(test_set, target, metric_ids=metrics)
    done = await lab.wait(run["id"], seconds=60)
    assert done["status"] == "completed", done
    return str(run["id"])


@pytest.mark.slow
async def test_the_summary_of_a_fresh_organizations_run_is_planned_linearly(
    lab, owner_engine, committed_database, runtime_engine
):
    # The statistics know the lab's organization and its small run, not the one made after.
    await _finished_run(lab, 20)
    await analyze(owner_engine, "results", "evaluations", "test_set_version_cases")
    account = await register(lab.client)
    try:
        project = await lab.client.post(
            "/api/v1/projects", json={"name": "fresh"}, headers=account.headers
        )
        fresh = Lab(client=lab.client, account=account, project_id=project.json()["id"])
        run_id = await _finished_run(fresh, CASES)

        with statements(runtime_engine) as seen:
            summary = await fresh.get(f"/runs/{run_id}/summary")
        assert summary["counts"]["done"] == CASES
        assert len(summary["by_topic"]) == 5
        assert [m["evaluated"] for m in summary["metrics"]] == [CASES, CASES]

        async with committed_database.transaction(Tenant(account.organization_id)) as session:
            reads = await rows_handled(
                session, seen, "results", "evaluations", "test_set_version_cases"
            )
        assert reads
        for handled, sql in reads:
            assert handled <= LINEAR, f"{handled} rows: {sql}"
    finally:
        await remove_account(owner_engine, account)
