"""Metrics that take each test's parameters (`{"from_test": key}`): scored where the test gives
them, skipped where it does not, an error where what it gives is not valid."""

from __future__ import annotations

from tests.helpers import assert_problem


async def test_each_test_gives_its_own_reference(lab, fake):
    target = await lab.openai_model(fake)  # echoes the input
    contains = await lab.metric("contains", parameters={"from_test": "assert:contains"})
    rubric_free = await lab.metric("word-count", parameters={"min": 1})
    test_set = await lab.test_set(
        [
            {"input": "Paris is the capital", "metadata": {"assert:contains": {"value": "Paris"}}},
            {"input": "Berlin is big", "metadata": {"assert:contains": {"value": "Paris"}}},
            {"input": "no assertion here"},
            {
                "input": "Rome, rome",
                "metadata": {
                    "assert:contains": {"value": "ROME", "case_sensitive": False},
                },
            },
            {"input": "bad", "metadata": {"assert:contains": {"values": ["x"]}}},
        ]
    )
    run = await lab.run(test_set, target, metric_ids=[contains, rubric_free], concurrency=1)
    await lab.wait(run["id"])
    by_input = {r["input"]["text"]: r for r in await lab.results(run["id"])}

    def verdicts(text: str) -> dict[str, bool]:
        return {e["metric_name"].split("-")[0]: e["passed"] for e in by_input[text]["evaluations"]}

    assert by_input["Paris is the capital"]["status"] == "passed"
    assert verdicts("Paris is the capital") == {"contains": True, "word": True}
    assert by_input["Berlin is big"]["status"] == "failed"
    assert verdicts("Berlin is big") == {"contains": False, "word": True}
    # Not asserted by the test: not scored by the metric at all.
    assert verdicts("no assertion here") == {"word": True}
    assert by_input["no assertion here"]["status"] == "passed"
    assert by_input["Rome, rome"]["status"] == "passed"
    bad = by_input["bad"]
    assert bad["status"] == "errored"
    assert "metadata['assert:contains']" in bad["error_message"]

    summary = await lab.get(f"/runs/{run['id']}/summary")
    per_metric = {m["type"]: m for m in summary["metrics"]}
    assert per_metric["contains"]["evaluated"] == 3  # the errored one is counted apart
    assert per_metric["contains"]["errored"] == 1
    assert per_metric["word-count"]["evaluated"] == 5


async def test_a_per_test_threshold_overrides_the_metric(lab, fake):
    target = await lab.openai_model(fake)
    similar = await lab.metric("similarity", parameters={"from_test": "ref"})
    test_set = await lab.test_set(
        [
            {"input": "abcdefghij", "metadata": {"ref": {"value": "abcdefghXY"}}},
            {"input": "abcdefghij", "metadata": {"ref": {"value": "abcdefghXY", "threshold": 0.5}}},
        ]
    )
    run = await lab.run(test_set, target, metric_ids=[similar], concurrency=1)
    await lab.wait(run["id"])
    results = sorted(await lab.results(run["id"]), key=lambda r: r["position"])
    assert [r["status"] for r in results] == ["failed", "passed"]


async def test_per_test_parameters_name_a_key_and_nothing_else(lab):
    response = await lab.post(
        "/metrics",
        {
            "project_id": lab.project_id,
            "name": "mixed",
            "type": "contains",
            "parameters": {"from_test": "k", "value": "x"},
        },
    )
    assert_problem(response, 422, field="parameters.value")
    response = await lab.post(
        "/metrics",
        {
            "project_id": lab.project_id,
            "name": "blank",
            "type": "regex",
            "parameters": {"from_test": ""},
        },
    )
    assert_problem(response, 422, field="parameters.from_test")


async def test_a_case_no_metric_applies_to_is_not_scored_not_passed(lab, fake):
    target = await lab.openai_model(fake)
    contains = await lab.metric("contains", parameters={"from_test": "assert:contains"})
    test_set = await lab.test_set(
        [{"input": "a", "metadata": {"assert:contains": {"value": "a"}}}, {"input": "b"}]
    )
    run = await lab.run(test_set, target, metric_ids=[contains], concurrency=1)
    await lab.wait(run["id"])
    results = sorted(await lab.results(run["id"]), key=lambda r: r["position"])
    assert [r["status"] for r in results] == ["passed", "errored"]
    assert results[1]["error_type"] == "not_scored"
    assert results[1]["evaluations"] == []


async def test_a_per_test_threshold_must_be_a_number_in_range(lab, fake):
    target = await lab.openai_model(fake)
    similar = await lab.metric("similarity", parameters={"from_test": "ref"})
    test_set = await lab.test_set(
        [{"input": "abc", "metadata": {"ref": {"value": "abc", "threshold": -5}}}]
    )
    run = await lab.run(test_set, target, metric_ids=[similar], concurrency=1)
    await lab.wait(run["id"])
    (result,) = await lab.results(run["id"])
    assert result["status"] == "errored"
    assert "threshold: a number from 0 to 1,000,000" in result["error_message"]


async def test_a_metric_floor_holds_over_the_cases_the_metric_applies_to(lab, fake):
    """A case the metric does not apply to has no evaluation and no error: it is no doubt
    beside the metric's floor (as an errored case would be)."""
    target = await lab.openai_model(fake)  # echoes the input
    contains = await lab.metric("contains", parameters={"from_test": "assert:contains"})
    name = (await lab.get(f"/metrics/{contains}"))["name"]
    asserted = {"metadata": {"assert:contains": {"value": "Paris"}}}
    test_set = await lab.test_set(
        [{"input": f"Paris {i}", **asserted} for i in range(5)]
        + [{"input": f"no assertion {i}"} for i in range(5)]
    )
    every_case = await lab.metric("word-count", parameters={"min": 1})
    gate = {"min_metric_pass_rates": {name: 0.9}, "fail_on": "never"}
    run = await lab.run(test_set, target, metric_ids=[contains, every_case], gate=gate)
    result = (await lab.wait(run["id"]))["gate_result"]
    assert (result["status"], result["reasons"]) == ("passed", []), result
