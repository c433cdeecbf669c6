"""A run's gate: decided when the run ends, stored on the run, in its summary and its JUnit
export; and a project's baseline run."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import pytest

from tests.fakes.server import Fault
from tests.helpers import assert_problem

pytestmark = pytest.mark.slow


def _replies(broken: set[str]):
    def reply(body: dict) -> str:
        text = json.dumps(body["messages"])
        return "no" if any(word in text for word in broken) else "yes"

    return reply


async def _setup(lab, fake, n: int = 60):
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": f"case {i}"} for i in range(n)])
    metric = await lab.metric("contains", parameters={"value": "yes"})
    return target, test_set, metric


async def test_a_regression_fails_the_gate_with_its_reasons(lab, fake):
    target, test_set, metric = await _setup(lab, fake)
    fake.reply = _replies(set())
    baseline = await lab.run(test_set, target, metric_ids=[metric])
    await lab.wait(baseline["id"])
    await lab.client.put(
        f"/api/v1/projects/{lab.project_id}/baseline",
        json={"run_id": baseline["id"]},
        headers=lab.account.headers,
    )
    # A third of the cases now fail.
    fake.reply = _replies({f'case {i}"' for i in range(0, 60, 3)})
    gate = {"baseline": "project", "fail_on": "regression", "min_pass_rate": 0.5}
    candidate = await lab.run(test_set, target, metric_ids=[metric], gate=gate)
    assert candidate["gate"]["baseline_run_id"] == baseline["id"]
    done = await lab.wait(candidate["id"])
    result = done["gate_result"]
    assert result["status"] == "failed"
    assert result["baseline_run_id"] == baseline["id"]
    assert any("regressed" in reason and "100% → 66.7%" in reason for reason in result["reasons"])
    assert result["comparison"]["overall"]["verdict"] == "regressed"
    summary = await lab.get(f"/runs/{candidate['id']}/summary")
    assert summary["gate_result"] == result

    export = await lab.client.get(
        f"/api/v1/runs/{candidate['id']}/export",
        params={"format": "junit"},
        headers=lab.account.headers,
    )
    suite = ElementTree.fromstring(export.content)
    [gate_case] = [c for c in suite.iter("testcase") if c.get("name") == "gate"]
    failure = gate_case.find("failure")
    assert failure is not None and "regressed" in failure.get("message", "")
    assert suite.get("tests") == "61" and suite.get("failures") == str(20 + 1)


async def test_floors_and_an_unchanged_candidate(lab, fake):
    # 200 cases: enough to show an unchanged candidate within 2 points (it takes 183).
    target, test_set, metric = await _setup(lab, fake, n=200)
    fake.reply = _replies(set())
    baseline = await lab.run(test_set, target, metric_ids=[metric])
    await lab.wait(baseline["id"])
    # Unchanged, with a floor it meets: the comparison is equivalent and the gate passes.
    same = await lab.run(
        test_set,
        target,
        metric_ids=[metric],
        gate={"baseline": baseline["id"], "min_pass_rate": 0.9},
    )
    result = (await lab.wait(same["id"]))["gate_result"]
    assert result["status"] == "passed", result
    assert result["comparison"]["overall"]["verdict"] == "equivalent"

    # No baseline at all and a missed floor: failed, saying which floor.
    fake.reply = _replies({"case 1"})  # case 1, 10-19 and 100-199: 111 of 200 fail
    metric_name = (await lab.get(f"/metrics/{metric}"))["name"]
    floors = {"fail_on": "never", "min_metric_pass_rates": {metric_name: 0.9}}
    floored = await lab.run(test_set, target, metric_ids=[metric], gate=floors)
    result = (await lab.wait(floored["id"]))["gate_result"]
    assert result["status"] == "failed"
    assert result["reasons"] == [f"{metric_name} pass rate 44.5% is below its floor of 90.0%"]

    # Regression asked for, but the project has no baseline and there are no floors.
    undecided = await lab.run(test_set, target, metric_ids=[metric], gate={"baseline": "project"})
    result = (await lab.wait(undecided["id"]))["gate_result"]
    assert result["status"] == "undecided"
    assert "no baseline" in result["reasons"][0]


async def test_a_small_unchanged_candidate_leaves_a_regression_gate_undecided(lab, fake):
    """Nothing changed in 20 cases, but 20 cases cannot rule out a change of 2 points."""
    target, test_set, metric = await _setup(lab, fake, n=20)
    fake.reply = _replies(set())
    baseline = await lab.run(test_set, target, metric_ids=[metric])
    await lab.wait(baseline["id"])
    candidate = await lab.run(
        test_set, target, metric_ids=[metric], gate={"baseline": baseline["id"]}
    )
    result = (await lab.wait(candidate["id"]))["gate_result"]
    assert result["status"] == "undecided"
    assert any("it takes 183" in reason for reason in result["reasons"])


async def test_a_regression_gate_passes_a_candidate_shown_no_worse(lab, fake):
    """A gate failing on regression asks whether the change is worse. A candidate that only
    fixed two cases of 200 was inconclusive (its interval reaches past +2 points) and held CI
    as undecided; two cases broken still do."""
    target, test_set, metric = await _setup(lab, fake, n=200)
    two = {'case 3"', 'case 7"'}
    fake.reply = _replies(two)
    baseline = await lab.run(test_set, target, metric_ids=[metric])
    await lab.wait(baseline["id"])
    fake.reply = _replies(set())
    fixed = await lab.run(test_set, target, metric_ids=[metric], gate={"baseline": baseline["id"]})
    result = (await lab.wait(fixed["id"]))["gate_result"]
    assert result["status"] == "passed", result
    overall = result["comparison"]["overall"]
    assert overall["verdict"] == "inconclusive"  # +1 point, 95% CI 0 to +2.5: past the margin
    compared = await lab.get(f"/runs/{fixed['id']}/compare", baseline=baseline["id"])
    assert compared["overall"]["not_worse"] is True

    fake.reply = _replies(two)
    broken = await lab.run(test_set, target, metric_ids=[metric], gate={"baseline": fixed["id"]})
    result = (await lab.wait(broken["id"]))["gate_result"]
    assert result["status"] == "undecided", result
    compared = await lab.get(f"/runs/{broken['id']}/compare", baseline=fixed["id"])
    assert compared["overall"]["verdict"] == "inconclusive"
    assert compared["overall"]["not_worse"] is False  # 95% CI -2.5 to 0: past the margin


async def test_a_cancelled_gated_run_is_undecided(lab, fake):
    target, test_set, metric = await _setup(lab, fake, n=30)
    fake.latency = 0.2
    run = await lab.run(
        test_set, target, metric_ids=[metric], concurrency=1, gate={"min_pass_rate": 0.5}
    )
    await lab.wait_for_results(run["id"], 1)
    cancelled = await lab.post(f"/runs/{run['id']}/cancel", {}, expect=200)
    result = cancelled.json()["gate_result"]
    assert result["status"] == "undecided"
    assert "did not complete" in result["reasons"][0]


async def test_a_baseline_must_be_a_finished_run_of_the_project(lab, fake):
    target, test_set, metric = await _setup(lab, fake, n=2)
    other = (await lab.post("/projects", {"name": "other"}, expect=201)).json()["id"]
    run = await lab.run(test_set, target, metric_ids=[metric])
    await lab.wait(run["id"])
    response = await lab.client.put(
        f"/api/v1/projects/{other}/baseline",
        json={"run_id": run["id"]},
        headers=lab.account.headers,
    )
    assert_problem(response, 422, field="run_id")
    cleared = await lab.client.put(
        f"/api/v1/projects/{lab.project_id}/baseline",
        json={"run_id": None},
        headers=lab.account.headers,
    )
    assert cleared.status_code == 200 and cleared.json()["baseline_run_id"] is None


async def test_a_gate_that_cannot_be_decided_does_not_keep_the_run_from_ending(
    lab, fake, monkeypatch
):
    from database.results import gates

    async def broken(*args: object) -> None:
        raise RuntimeError("a bug in deciding")

    monkeypatch.setattr(gates, "decide", broken)
    target, test_set, metric = await _setup(lab, fake, n=3)
    run = await lab.run(test_set, target, metric_ids=[metric], gate={"min_pass_rate": 0.5})
    done = await lab.wait(run["id"])
    assert done["status"] == "completed" and done["counts"]["done"] == 3
    assert done["gate_result"]["status"] == "undecided"
    assert done["gate_result"]["reasons"] == ["the gate could not be decided (RuntimeError)"]


async def test_max_dropped_fails_a_run_whose_failing_tests_were_deleted(lab, fake):
    target, test_set, metric = await _setup(lab, fake, n=200)
    broken = {f'case {i}"' for i in range(0, 200, 10)}  # 20 of 200 fail
    fake.reply = _replies(broken)
    baseline = await lab.run(test_set, target, metric_ids=[metric])
    await lab.wait(baseline["id"])
    # The failing tests are deleted from the set: what is left all passes.
    cases = await lab.get("/tests", test_set_id=test_set, limit=200)
    for case in cases["items"]:
        if f'{case["input"]}"' in broken:
            await lab.client.delete(
                f"/api/v1/test-sets/{test_set}/tests/{case['id']}", headers=lab.account.headers
            )
    gates = {
        "lenient": {"baseline": baseline["id"]},
        "strict": {"baseline": baseline["id"], "max_dropped": 5},
    }
    results = {}
    for name, gate in gates.items():
        run = await lab.run(test_set, target, metric_ids=[metric], gate=gate)
        results[name] = (await lab.wait(run["id"]))["gate_result"]
    assert results["lenient"]["status"] != "failed", results["lenient"]
    assert results["strict"]["status"] == "failed", results["strict"]
    assert any(
        "20 of the baseline's tests are not in this run" in reason
        for reason in results["strict"]["reasons"]
    ), results["strict"]["reasons"]


async def test_errors_that_may_hide_a_regression_leave_the_gate_undecided(lab, fake):
    """An errored case has no verdict and pass rates leave it out: 17 of 200 cases erroring
    where the baseline passed them all would otherwise read "100% → 100%", and meet a 95%
    floor that only 91.5% of the cases are known to meet."""
    target, test_set, metric = await _setup(lab, fake, n=200)
    fake.reply = _replies(set())
    baseline = await lab.run(test_set, target, metric_ids=[metric])
    await lab.wait(baseline["id"])

    fake.enqueue(*[Fault.http(400)] * 17)  # refused: not retried, each its case's error
    floor_only = await lab.run(test_set, target, metric_ids=[metric], gate={"min_pass_rate": 0.95})
    result = (await lab.wait(floor_only["id"]))["gate_result"]
    assert result["status"] == "undecided"
    assert any(
        "meets the floor of 95.0% only without its 17 errored results" in reason
        and "91.5%" in reason
        for reason in result["reasons"]
    ), result["reasons"]

    fake.enqueue(*[Fault.http(400)] * 17)
    compared = await lab.run(
        test_set, target, metric_ids=[metric], gate={"baseline": baseline["id"]}
    )
    result = (await lab.wait(compared["id"]))["gate_result"]
    assert result["status"] == "undecided"
    assert result["comparison"]["overall"]["verdict"] == "equivalent"  # over the rated cases
    assert any(
        "17 of 200 results errored (8.5%), against 0.0% of the baseline's" in reason
        for reason in result["reasons"]
    ), result["reasons"]

    # A metric's floor, the same; and a gate asking for no regression has no errors beside
    # a baseline to doubt.
    name = (await lab.get(f"/metrics/{metric}"))["name"]
    fake.enqueue(*[Fault.http(400)] * 17)
    metric_floor = await lab.run(
        test_set,
        target,
        metric_ids=[metric],
        gate={
            "baseline": baseline["id"],
            "fail_on": "never",
            "min_metric_pass_rates": {name: 0.95},
        },
    )
    result = (await lab.wait(metric_floor["id"]))["gate_result"]
    assert result["status"] == "undecided"
    assert [r for r in result["reasons"] if "errored" in r or "could not score" in r] == [
        f"{name} pass rate 100.0% meets its floor of 95.0% only without the 17 errors it could"
        " not score: counted as failures, they make it 91.5%"
    ], result["reasons"]

    # As many errors as the baseline's, or a floor met with them counted as failures: passed.
    fake.enqueue(*[Fault.http(400)] * 3)
    few = await lab.run(
        test_set,
        target,
        metric_ids=[metric],
        gate={"baseline": baseline["id"], "min_pass_rate": 0.95},
    )
    result = (await lab.wait(few["id"]))["gate_result"]
    assert (result["status"], result["reasons"]) == ("passed", []), result


async def test_a_gate_without_a_baseline_says_it_looked_for_no_regression(lab, fake):
    target, test_set, metric = await _setup(lab, fake, n=5)
    fake.reply = _replies({"case"})  # every case fails
    run = await lab.run(test_set, target, metric_ids=[metric], gate={})
    result = (await lab.wait(run["id"]))["gate_result"]
    assert result["status"] == "passed"  # a gate of floors only, and it has none
    assert result["reasons"] == [
        "no baseline named: no regression looked for, only the floors and errors"
    ]
