"""A gate with `fail_on: never` asks nothing of a comparison: a baseline it cannot be compared
with is a note, unless `max_dropped` asks how many of the baseline's tests are missing."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


async def test_a_never_gate_is_decided_by_its_floors_beside_a_baseline_it_cannot_compare(lab, fake):
    target = await lab.openai_model(fake)
    metric = await lab.metric("contains", parameters={"value": "yes"})
    fake.reply = lambda body: "yes"
    earlier = await lab.test_set([{"input": f"earlier {i}"} for i in range(10)])
    later = await lab.test_set([{"input": f"later {i}"} for i in range(10)])
    baseline = await lab.run(earlier, target, metric_ids=[metric])
    await lab.wait(baseline["id"])
    await lab.client.put(
        f"/api/v1/projects/{lab.project_id}/baseline",
        json={"run_id": baseline["id"]},
        headers=lab.account.headers,
    )
    unrelated = "no comparison with the baseline: the runs have no case in common"

    never = {"baseline": "project", "fail_on": "never", "min_pass_rate": 0.9}
    run = await lab.run(later, target, metric_ids=[metric], gate=never)
    result = (await lab.wait(run["id"]))["gate_result"]
    assert result["status"] == "passed", result
    assert result["comparison"] is None
    assert [r for r in result["reasons"] if r.startswith(unrelated)] == result["reasons"]

    # Every one of the baseline's tests may be missing: max_dropped cannot be ruled on.
    counted = {**never, "max_dropped": 3}
    run = await lab.run(later, target, metric_ids=[metric], gate=counted)
    result = (await lab.wait(run["id"]))["gate_result"]
    assert result["status"] == "undecided", result
    assert any(r.startswith(unrelated) for r in result["reasons"]), result
