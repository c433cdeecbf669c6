"""What a gate cannot see: a run with no result rated decides nothing, however lenient the
gate; and a metric it fails on but could not compare is said to be missing from the run that
lacks it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.fakes.server import Fault

pytestmark = pytest.mark.slow

CASES = 30


@pytest.mark.parametrize(
    "gate",
    [{"max_error_rate": 1.0}, {"fail_on": "never", "max_error_rate": 1.0}],
    ids=["no-baseline", "never"],
)
async def test_a_gate_with_no_result_rated_is_undecided(lab, fake, gate):
    target = await lab.openai_model(fake)
    metric = await lab.metric("contains", parameters={"value": "echo"})
    test_set = await lab.test_set([{"input": f"case {i}"} for i in range(CASES)])
    fake.enqueue(*[Fault.http(400)] * CASES)  # refused: not retried, each its case's error
    run = await lab.run(test_set, target, metric_ids=[metric], gate=gate)
    ended = await lab.wait(run["id"])
    assert ended["counts"]["errored"] == CASES
    result = ended["gate_result"]
    assert result["status"] == "undecided", result
    assert f"no result was rated ({CASES} of {CASES} errored)" in result["reasons"]


async def _set_of(lab, test_ids: list[str]) -> str:
    body = {"project_id": lab.project_id, "name": f"s-{uuid.uuid4().hex[:6]}", "test_ids": test_ids}
    return (await lab.post("/test-sets", body, expect=201)).json()["id"]


async def test_a_metric_this_run_never_evaluated_is_said_to_be_missing_here(lab, fake):
    """The metric takes its value from a test's metadata: the baseline's set has a test that
    gives it, the run's set only the tests both share, which do not."""
    target = await lab.openai_model(fake)  # echoes the input
    every = await lab.any_answer()
    asserted = await lab.metric("contains", parameters={"from_test": "assert:contains"})
    cases: list[dict[str, Any]] = [{"input": f"case {i}"} for i in range(10)]
    cases.append({"input": "Paris", "metadata": {"assert:contains": {"value": "Paris"}}})
    created = await lab.post(
        "/tests/bulk", {"project_id": lab.project_id, "tests": cases}, expect=201
    )
    test_ids = created.json()["ids"]
    baseline = await lab.run(await _set_of(lab, test_ids), target, metric_ids=[every, asserted])
    await lab.wait(baseline["id"])
    name = (await lab.get(f"/metrics/{asserted}"))["name"]
    gate = {"baseline": baseline["id"], "fail_on": [name]}
    run = await lab.run(
        await _set_of(lab, test_ids[:10]), target, metric_ids=[every, asserted], gate=gate
    )
    result = (await lab.wait(run["id"]))["gate_result"]
    assert result["status"] == "undecided", result
    assert f"{name}: not compared (this run has no evaluation of it)" in result["reasons"], result
