"""A budget given to more work of a run leaves a trace in the audit log, as a repeat's does:
`run.resumed` (the max_cost given, the budget the run has as a result) and `run.rerun` (the
same, for the new run)."""

from __future__ import annotations

import pytest

from tests.database.organizations.audit_helpers import audit_entries
from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.slow

CASES = 4


async def _priced_target(lab: Lab, fake: FakeOpenAI) -> str:
    # Each call costs 0.3 USD: three prompt tokens at 100,000 USD per million.
    return await lab.openai_model(fake, input_price_per_mtok=100_000, output_price_per_mtok=0)


async def test_a_resume_is_audited_with_the_budget_it_was_given(lab: Lab, fake: FakeOpenAI):
    target = await _priced_target(lab, fake)
    test_set = await lab.test_set([{"input": f"question number {i}"} for i in range(CASES)])
    metric = await lab.any_answer()
    run = await lab.run(test_set, target, metric_ids=[metric], concurrency=1, max_cost=0.5)
    stopped = await lab.wait(run["id"])
    assert stopped["status"] == "stopped", stopped

    resumed = (await lab.post(f"/runs/{run['id']}/resume", {"max_cost": 10}, expect=202)).json()
    await lab.wait(run["id"])

    [entry] = await audit_entries(lab.client, lab.account, action="run.resumed")
    assert (entry["target_type"], entry["target_id"]) == ("run", run["id"])
    assert entry["details"]["ended_as"] == "stopped"
    assert entry["details"]["max_cost"] == 10
    assert entry["details"]["budget"] == pytest.approx(stopped["spent"] + 10)
    assert entry["details"]["budget"] == pytest.approx(resumed["max_cost"])


async def test_a_rerun_is_audited_with_its_budget(lab: Lab, fake: FakeOpenAI):
    target = await _priced_target(lab, fake)
    cases = [{"input": f"q{i}", "expected_output": "never said"} for i in range(CASES)]
    test_set = await lab.test_set(cases)  # every case fails: each can be rerun
    metric = await lab.metric("contains")
    run = await lab.run(test_set, target, metric_ids=[metric], max_cost=2.0)
    await lab.wait(run["id"])

    own = (await lab.post(f"/runs/{run['id']}/rerun", {"max_cost": 0.5}, expect=202)).json()
    same = (await lab.post(f"/runs/{run['id']}/rerun", {}, expect=202)).json()
    await lab.wait(own["id"])
    await lab.wait(same["id"])

    entries = await audit_entries(lab.client, lab.account, action="run.rerun")
    by_new_run = {entry["details"]["rerun_run_id"]: entry for entry in entries}
    assert set(by_new_run) == {own["id"], same["id"]}, entries
    assert all(entry["target_id"] == run["id"] for entry in entries)
    assert (by_new_run[own["id"]]["details"]["max_cost"], own["max_cost"]) == (0.5, 0.5)
    assert by_new_run[own["id"]]["details"]["budget"] == 0.5
    # Not given one: the new run's budget is the size of its parent's.
    assert by_new_run[same["id"]]["details"]["max_cost"] is None
    assert by_new_run[same["id"]]["details"]["budget"] == 2.0
