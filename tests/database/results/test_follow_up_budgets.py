"""The budget of work a run is given after it ended: a run stopped by its budget resumes with
more (`max_cost`: that much more than it has spent), and a rerun keeps a budget the size of
its parent's unless it is given one."""

from __future__ import annotations

import pytest

from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import assert_problem

pytestmark = pytest.mark.slow

CASES = 6
CALL_PRICE = 0.3  # three prompt tokens at 100,000 USD per million, nothing for the answer


async def _priced_target(lab: Lab, fake: FakeOpenAI) -> str:
    return await lab.openai_model(fake, input_price_per_mtok=100_000, output_price_per_mtok=0)


def _cases(**extra: str) -> list[dict[str, str]]:
    return [{"input": f"question number {i}", **extra} for i in range(CASES)]


def _target_calls(fake: FakeOpenAI) -> int:
    return len([r for r in fake.requests if r.path.endswith("/chat/completions")])


async def test_a_run_stopped_by_its_budget_resumes_with_more(lab: Lab, fake: FakeOpenAI):
    target = await _priced_target(lab, fake)
    test_set = await lab.test_set(_cases())
    run = await lab.run(
        test_set, target, metric_ids=[await lab.any_answer()], concurrency=1, max_cost=0.5
    )
    stopped = await lab.wait(run["id"])
    assert stopped["status"] == "stopped", stopped
    kept = {r["position"] for r in await lab.results(run["id"])}
    assert len(kept) < CASES

    refused = await lab.post(f"/runs/{run['id']}/resume", {})
    assert "send a max_cost" in assert_problem(refused, 409)["detail"]
    assert_problem(
        await lab.post(f"/runs/{run['id']}/resume", {"max_cost": 0}), 422, field="max_cost"
    )

    resumed = await lab.post(f"/runs/{run['id']}/resume", {"max_cost": 10}, expect=202)
    assert resumed.json()["status"] == "queued"
    assert resumed.json()["max_cost"] == pytest.approx(stopped["spent"] + 10)
    done = await lab.wait(run["id"])
    assert done["status"] == "completed", done
    results = await lab.results(run["id"])
    assert sorted(r["position"] for r in results) == list(range(CASES))
    assert _target_calls(fake) == CASES  # the cases kept were not asked again
    assert done["spent"] == pytest.approx(CASES * CALL_PRICE)


async def test_a_rerun_has_a_budget_of_its_parents_size_or_its_own(lab: Lab, fake: FakeOpenAI):
    target = await _priced_target(lab, fake)
    test_set = await lab.test_set(_cases(expected_output="never said"))  # every case fails
    contains = await lab.metric("contains")
    run = await lab.run(test_set, target, metric_ids=[contains], concurrency=1, max_cost=2.0)
    parent = await lab.wait(run["id"])
    assert (parent["status"], parent["counts"]["failed"]) == ("completed", CASES), parent
    assert parent["spent"] == pytest.approx(CASES * CALL_PRICE)

    # Without a max_cost: a fresh budget as large as the parent's (not what the parent left).
    same = (await lab.post(f"/runs/{run['id']}/rerun", {}, expect=202)).json()
    assert same["max_cost"] == pytest.approx(2.0)
    same_done = await lab.wait(same["id"])
    assert (same_done["status"], same_done["counts"]["done"]) == ("completed", CASES)

    # With one: that budget, which stops it.
    own = (await lab.post(f"/runs/{run['id']}/rerun", {"max_cost": 0.5}, expect=202)).json()
    assert own["max_cost"] == pytest.approx(0.5)
    own_done = await lab.wait(own["id"])
    assert own_done["status"] == "stopped", own_done
    assert own_done["counts"]["done"] < CASES
