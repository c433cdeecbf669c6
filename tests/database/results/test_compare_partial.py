"""A comparison with a run that ended before completing (cancelled, stopped, failed) says so:
its verdict stands on the results the run has, and may not hold for the whole set."""

from __future__ import annotations

import pytest

from tests.fakes.server import Fault

pytestmark = pytest.mark.slow


async def _compare(lab, run_id: str, baseline: str) -> dict:
    response = await lab.client.get(
        f"/api/v1/runs/{run_id}/compare",
        params={"baseline": baseline},
        headers=lab.account.headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_comparison_with_a_cancelled_run_is_marked_partial(lab, fake):
    target = await lab.openai_model(fake)
    metric = await lab.any_answer()
    test_set = await lab.test_set([{"input": f"case {i}"} for i in range(4)])
    baseline = await lab.run(test_set, target, metric_ids=[metric])
    await lab.wait(baseline["id"])
    whole = await lab.run(test_set, target, metric_ids=[metric])
    await lab.wait(whole["id"])

    complete = await _compare(lab, whole["id"], baseline["id"])
    assert complete["partial"] is False
    assert (complete["run_status"], complete["baseline_status"]) == ("completed", "completed")

    # One at a time: the first answered, the second hangs until the run is cancelled.
    fake.enqueue(None, Fault.hang(30))
    cut = await lab.run(test_set, target, metric_ids=[metric], concurrency=1)
    await lab.wait_for_results(cut["id"], 1)
    await lab.post(f"/runs/{cut['id']}/cancel", {}, expect=200)
    assert (await lab.wait(cut["id"]))["status"] == "cancelled"

    partial = await _compare(lab, cut["id"], baseline["id"])
    assert partial["partial"] is True
    assert (partial["run_status"], partial["baseline_status"]) == ("cancelled", "completed")
    assert partial["cases"]["only_in_baseline"] >= 1
    reverse = await _compare(lab, baseline["id"], cut["id"])
    assert reverse["partial"] is True and reverse["baseline_status"] == "cancelled"
