"""Comparing runs end to end through HTTP against the fake provider: pairing by test, the
verdicts, slices and flips, and what bad requests get."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from database.results import changes
from database.results.crud import pairing, pinned_versions
from tests.fakes.openai_server import echo_reply
from tests.fakes.server import Fault
from tests.helpers import assert_problem, register

pytestmark = pytest.mark.slow

BEHAVIORS = ("answer", "refuse", "summarise")


def _flip_aware(body: dict) -> str:
    """Echoes, except that a request rendered as FLIP gets an answer missing the reference."""
    return "nothing useful" if "FLIP" in json.dumps(body["messages"]) else echo_reply(body)


def _cases(flipped_in: str, flips: int) -> list[dict]:
    """100 cases per behavior; 10 of each fail on any target (an unreachable reference); the
    candidate's prompt breaks `flips` more of `flipped_in`'s passing cases."""
    cases = []
    for behavior in BEHAVIORS:
        for i in range(100):
            breaks = behavior == flipped_in and 10 <= i < 10 + flips
            cases.append(
                {
                    "input": f"{behavior} question {i}",
                    "expected_output": "never said" if i < 10 else f"{behavior} question {i}",
                    "behavior": behavior,
                    "category": "all",
                    "variables": {"flip": breaks},
                }
            )
    return cases


async def _prompt(lab, template: str) -> str:
    body = {"project_id": lab.project_id, "name": f"p-{uuid.uuid4().hex[:6]}", "template": template}
    return (await lab.post("/prompts", body, expect=201)).json()["id"]


async def _compare(lab, run_id: str, baseline: str, expect: int = 200, **params):
    response = await lab.client.get(
        f"/api/v1/runs/{run_id}/compare",
        params={"baseline": baseline, **params},
        headers=lab.account.headers,
    )
    assert response.status_code == expect, response.text
    return response


async def test_a_candidate_worse_on_one_behavior_is_regressed_there_and_overall(lab, fake):
    fake.reply = _flip_aware
    target = await lab.openai_model(fake)
    test_set = await lab.test_set(_cases("refuse", 15))
    contains = await lab.metric("contains")
    plain = await _prompt(lab, "{{ input }}")
    broken = await _prompt(lab, "{% if flip %}FLIP{% else %}{{ input }}{% endif %}")
    common = {"metric_ids": [contains], "concurrency": 20}
    baseline = await lab.run(test_set, target, prompt_id=plain, **common)
    candidate = await lab.run(test_set, target, prompt_id=broken, **common)
    again = await lab.run(test_set, target, prompt_id=plain, **common)
    for run in (baseline, candidate, again):
        assert (await lab.wait(run["id"], seconds=90))["status"] == "completed"

    body = (await _compare(lab, candidate["id"], baseline["id"])).json()
    assert body["verdict"] == "regressed", body["reason"]
    overall = body["overall"]
    assert (overall["baseline"], overall["candidate"]) == (0.9, 0.85)
    assert overall["delta"] == pytest.approx(-0.05)
    assert overall["ci"][0] < -0.05 < overall["ci"][1] < -0.02
    assert overall["test"] == "mcnemar-exact"
    # 15 discordant pairs, all one way: p = 2 * 0.5^15
    assert overall["p_value"] == pytest.approx(2 * 0.5**15, rel=1e-9)
    assert "90% → 85%" in overall["reason"] and "McNemar" in overall["reason"]
    assert body["cases"]["paired"] == 300 and body["cases"]["changed"] == 0
    slices = {(s["field"], s["value"]): s["pass_rate"] for s in body["slices"]}
    # One category for every case says nothing the overall does not: no such slice.
    assert set(slices) == {("behavior", b) for b in BEHAVIORS}
    refuse = slices[("behavior", "refuse")]
    assert refuse["verdict"] == "regressed" and refuse["delta"] == pytest.approx(-0.15)
    # Unchanged, but 100 cases cannot show a change is under 2 points (it takes 183).
    answer = slices[("behavior", "answer")]
    assert answer["verdict"] == "inconclusive" and "it takes 183" in answer["reason"]
    [metric] = body["metrics"]
    assert metric["pass_rate"]["verdict"] == "regressed" and metric["score"] is None
    method = body["method"]
    assert method["multiple_comparisons"].startswith("Holm") and method["resamples"] == 2000
    # Identical comparisons count once: the one metric's pass rate is the overall one, and the
    # two unchanged behaviors hold the same pairs of values.
    assert method["families"] == {"primary": 1, "exploratory": 2}
    assert metric["pass_rate"]["p_adjusted"] == overall["p_adjusted"] == overall["p_value"]
    flips = body["flips"]
    assert (flips["pass_to_fail"], flips["fail_to_pass"]) == (15, 0)
    first = flips["items"][0]
    assert first["direction"] == "pass_to_fail"
    assert first["baseline"]["status"] == "passed" and first["candidate"]["status"] == "failed"
    assert first["baseline"]["output"].startswith("echo: refuse question")
    assert first["candidate"]["output"] == "nothing useful"
    page = await _compare(lab, candidate["id"], baseline["id"], flips_limit=5, flips_offset=10)
    assert len(page.json()["flips"]["items"]) == 5
    # The same two runs always give the same answer.
    assert (await _compare(lab, candidate["id"], baseline["id"])).json() == body

    same = (await _compare(lab, again["id"], baseline["id"])).json()
    assert same["verdict"] == "equivalent", same["reason"]  # 300 cases, none changed
    assert all(s["pass_rate"]["verdict"] != "regressed" for s in same["slices"])
    assert same["flips"]["items"] == [] and same["overall"]["delta"] == 0

    # The project's baseline stands in for a run id.
    await lab.client.put(
        f"/api/v1/projects/{lab.project_id}/baseline",
        json={"run_id": baseline["id"]},
        headers=lab.account.headers,
    )
    assert (await lab.get(f"/projects/{lab.project_id}"))["baseline_run_id"] == baseline["id"]
    by_project = (await _compare(lab, candidate["id"], "project")).json()
    assert by_project["baseline_run_id"] == baseline["id"]
    assert by_project["overall"] == overall


async def test_changed_tests_are_left_out_unless_included(lab, fake):
    target = await lab.openai_model(fake)
    created = await lab.post(
        "/tests/bulk",
        {"project_id": lab.project_id, "tests": [{"input": f"q{i}"} for i in range(4)]},
        expect=201,
    )
    ids = created.json()["ids"]
    body = {"project_id": lab.project_id, "name": "changing", "test_ids": ids}
    test_set = (await lab.post("/test-sets", body, expect=201)).json()["id"]
    contains = await lab.metric("contains", parameters={"value": "q"})
    first = await lab.run(test_set, target, metric_ids=[contains])
    await lab.wait(first["id"])
    edited = await lab.client.patch(
        f"/api/v1/tests/{ids[0]}", json={"input": "edited"}, headers=lab.account.headers
    )
    assert edited.status_code == 200, edited.text
    second = await lab.run(test_set, target, metric_ids=[contains])
    await lab.wait(second["id"])

    body = (await _compare(lab, second["id"], first["id"])).json()
    assert body["cases"]["changed"] == 1 and body["cases"]["paired"] == 3
    assert body["cases"]["changed_test_ids"] == [ids[0]]
    included = (await _compare(lab, second["id"], first["id"], include_changed="true")).json()
    assert included["cases"]["paired"] == 4 and included["cases"]["changed_included"]


async def test_a_test_changed_where_its_metric_reads_its_metadata_is_changed(lab, fake):
    # The metric takes each test's parameters from metadata["ref"]: a test whose "ref" changed
    # is judged by other rules, a test whose "note" changed is the same test.
    target = await lab.openai_model(fake)
    metadata = {"ref": {"value": "q"}, "note": "first"}
    created = await lab.post(
        "/tests/bulk",
        {
            "project_id": lab.project_id,
            "tests": [{"input": f"q{i}", "metadata": metadata} for i in range(3)],
        },
        expect=201,
    )
    ids = created.json()["ids"]
    body = {"project_id": lab.project_id, "name": "per-test", "test_ids": ids}
    test_set = (await lab.post("/test-sets", body, expect=201)).json()["id"]
    contains = await lab.metric("contains", parameters={"from_test": "ref"})
    first = await lab.run(test_set, target, metric_ids=[contains])
    await lab.wait(first["id"])
    for test_id, edited in (
        (ids[0], {**metadata, "ref": {"value": "q", "case_sensitive": False}}),
        (ids[1], {**metadata, "note": "second"}),
    ):
        response = await lab.client.patch(
            f"/api/v1/tests/{test_id}", json={"metadata": edited}, headers=lab.account.headers
        )
        assert response.status_code == 200, response.text
    second = await lab.run(test_set, target, metric_ids=[contains])
    await lab.wait(second["id"])
    assert second["test_set_version_id"] != first["test_set_version_id"]

    body = (await _compare(lab, second["id"], first["id"])).json()
    assert body["cases"]["changed_test_ids"] == [ids[0]]
    assert body["cases"]["changed"] == 1 and body["cases"]["paired"] == 2


async def test_bad_comparisons_get_clear_answers(lab, fake):
    target = await lab.openai_model(fake)
    set_a = await lab.test_set([{"input": "a"}])
    set_b = await lab.test_set([{"input": "b"}])
    run_a = await lab.run(set_a, target, metric_ids=[await lab.any_answer()])
    run_b = await lab.run(set_b, target, metric_ids=[await lab.any_answer()])
    for run in (run_a, run_b):
        await lab.wait(run["id"])

    itself = assert_problem(await _compare(lab, run_a["id"], run_a["id"], 422), 422)
    assert "this run" in itself["errors"][0]["message"]
    no_common = assert_problem(await _compare(lab, run_a["id"], run_b["id"], 422), 422)
    assert "1 case(s), the baseline 1" in no_common["detail"]
    assert_problem(await _compare(lab, run_a["id"], str(uuid.uuid4()), 404), 404)
    assert_problem(await _compare(lab, run_a["id"], "latest", 422), 422, field="baseline")
    no_baseline = assert_problem(await _compare(lab, run_a["id"], "project", 422), 422)
    assert "no baseline" in no_baseline["detail"]
    not_a_number = await _compare(lab, run_a["id"], run_b["id"], 422, min_effect="nan")
    assert "finite" in assert_problem(not_a_number, 422, field="min_effect")["detail"]

    other_project = (await lab.post("/projects", {"name": "elsewhere"}, expect=201)).json()["id"]
    elsewhere = await lab.post(
        "/tests/bulk", {"project_id": other_project, "tests": [{"input": "a"}]}, expect=201
    )
    other_set = await lab.post(
        "/test-sets",
        {"project_id": other_project, "name": "x", "test_ids": elsewhere.json()["ids"]},
        expect=201,
    )
    other_metric = await lab.post(
        "/metrics",
        {
            "project_id": other_project,
            "name": "any",
            "type": "word-count",
            "parameters": {"min": 0},
        },
        expect=201,
    )
    run_c = await lab.run(other_set.json()["id"], target, metric_ids=[other_metric.json()["id"]])
    await lab.wait(run_c["id"])
    assert_problem(await _compare(lab, run_a["id"], run_c["id"], 404), 404)

    stranger = await register(lab.client)
    foreign = await lab.client.get(
        f"/api/v1/runs/{run_a['id']}/compare",
        params={"baseline": run_b["id"]},
        headers=stranger.headers,
    )
    assert_problem(foreign, 404)

    fake.enqueue(Fault.hang(30))
    running = await lab.run(set_a, target, metric_ids=[await lab.any_answer()])
    await lab.wait_for_results(run_a["id"], 1)
    unfinished = assert_problem(await _compare(lab, run_a["id"], running["id"], 409), 409)
    assert "queued" in unfinished["detail"] or "running" in unfinished["detail"]
    repeat = await lab.post(f"/runs/{running['id']}/repeat", {"cases": "all"})
    assert_problem(repeat, 409)
    baseline_put = await lab.client.put(
        f"/api/v1/projects/{lab.project_id}/baseline",
        json={"run_id": running["id"]},
        headers=lab.account.headers,
    )
    assert_problem(baseline_put, 409)
    rescore = await lab.post(f"/runs/{running['id']}/rescore", {"metric_ids": [str(uuid.uuid4())]})
    assert "once it has ended" in assert_problem(rescore, 409)["detail"]
    await lab.post(f"/runs/{running['id']}/cancel", {}, expect=200)
    # A cancelled run is a part of one: no project baseline, no gate's baseline.
    cancelled_put = await lab.client.put(
        f"/api/v1/projects/{lab.project_id}/baseline",
        json={"run_id": running["id"]},
        headers=lab.account.headers,
    )
    assert "cancelled" in assert_problem(cancelled_put, 409)["detail"]
    gated = await lab.post(
        "/runs",
        {
            "test_set_id": set_a,
            "target_model_id": target,
            "metric_ids": [await lab.any_answer()],
            "gate": {"baseline": running["id"]},
        },
    )
    assert_problem(gated, 409)


async def test_gates_and_budgets_refuse_bad_input(lab, fake):
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": "a"}])
    contains = await lab.metric("contains", parameters={"value": "a"})
    name = (await lab.get(f"/metrics/{contains}"))["name"]
    for gate, field in (
        ({"fail_on": ["no-such-metric"]}, "gate.fail_on"),
        ({"fail_on": [name, name]}, "gate.fail_on"),  # stored, audited and read with every run
        ({"fail_on": [name] * 51}, "gate.fail_on"),
        ({"min_metric_pass_rates": {"nope": 0.5}}, "gate.min_metric_pass_rates"),
        ({"min_pass_rate": 1.5}, "min_pass_rate"),
    ):
        response = await lab.post(
            "/runs",
            {
                "test_set_id": test_set,
                "target_model_id": target,
                "metric_ids": [contains],
                "gate": gate,
            },
        )
        assert_problem(response, 422, field=field)
    negative = await lab.post(
        "/runs", {"test_set_id": test_set, "target_model_id": target, "max_cost": -1}
    )
    assert_problem(negative, 422, field="max_cost")
    missing = await lab.post(
        "/runs",
        {
            "test_set_id": test_set,
            "target_model_id": target,
            "metric_ids": [contains],
            "gate": {"baseline": str(uuid.uuid4())},
        },
    )
    assert_problem(missing, 422, field="gate.baseline")
    for field, body in (
        ("max_cost", {"max_cost": 0}),
        ("concurrency", {"concurrency": 10_000}),
    ):
        refused = await lab.post(
            "/runs", {"test_set_id": test_set, "target_model_id": target, **body}
        )
        assert_problem(refused, 422, field=field)
    assert (await lab.get("/runs", project_id=lab.project_id))["total"] == 0


SECRET = "the code word is tangerine"


def _leaky(body: dict) -> str:
    return SECRET if "LEAK" in json.dumps(body["messages"]) else echo_reply(body)


@pytest.mark.parametrize(
    "rule",
    [{"negate": True}, {"operator": "<", "threshold": 0.8}, {"operator": "==", "threshold": 1}],
)
async def test_a_score_that_passes_low_is_better_low(lab, fake, rule):
    """A metric that passes while the answer is unlike the secret: answers that repeat it
    score higher and fail, and the score's verdict agrees with the pass rate's."""
    fake.reply = _leaky
    target = await lab.openai_model(fake)
    cases = [
        {"input": f"question {i}", "expected_output": SECRET, "variables": {"leak": i < 40}}
        for i in range(200)
    ]
    test_set = await lab.test_set(cases)
    unlike = await lab.metric("similarity", **rule)
    common = {"metric_ids": [unlike], "concurrency": 20}
    baseline = await lab.run(
        test_set, target, prompt_id=await _prompt(lab, "{{ input }}"), **common
    )
    leaking = "{% if leak %}LEAK {% endif %}{{ input }}"
    candidate = await lab.run(test_set, target, prompt_id=await _prompt(lab, leaking), **common)
    for run in (baseline, candidate):
        assert (await lab.wait(run["id"], seconds=90))["status"] == "completed"

    [metric] = (await _compare(lab, candidate["id"], baseline["id"])).json()["metrics"]
    if rule.get("operator") == "==":  # no better direction: the score is not judged
        assert metric["score"] is None
        return
    assert metric["pass_rate"]["verdict"] == "regressed", metric["pass_rate"]["reason"]
    score = metric["score"]
    assert score["delta"] > 0  # in the score's own units: the leaking answers score higher
    assert score["verdict"] == "regressed", score["reason"]
    assert "mean score (lower passes)" in score["reason"]


async def test_a_comparisons_work_on_the_rows_is_done_off_the_event_loop(lab, fake, monkeypatch):
    """What a comparison computes from the rows it read grows with cases, repetitions and
    metrics (seconds for a large run): none of it holds the event loop."""
    target = await lab.openai_model(fake)
    cases = [{"input": f"question {i}", "expected_output": f"question {i}"} for i in range(6)]
    test_set = await lab.test_set(cases)
    common = {"metric_ids": [await lab.metric("similarity")], "repetitions": 2}
    runs = [await lab.run(test_set, target, **common) for _ in range(2)]
    first_test = (await lab.get("/tests", test_set_id=test_set))["items"][0]["id"]
    edited = await lab.client.patch(
        f"/api/v1/tests/{first_test}", json={"input": "edited"}, headers=lab.account.headers
    )
    assert edited.status_code == 200, edited.text
    runs.append(await lab.run(test_set, target, **common))  # another version: paired by key
    for run in runs:
        assert (await lab.wait(run["id"]))["status"] == "completed"

    on_the_loop: dict[str, list[bool]] = {}
    for module, name in [
        (pairing, "_paired_by_position"),
        (pairing, "_paired_by_key"),
        (pinned_versions, "_slices"),
        (pinned_versions, "_changed"),
        (pairing, "_metric_pairs"),
        (changes, "_flipped"),
    ]:
        work = getattr(module, name)

        def noted(*args, _work=work, _name=name):
            on_the_loop.setdefault(_name, []).append(threading.current_thread() is loop_thread)
            return _work(*args)

        monkeypatch.setattr(module, name, noted)
    loop_thread = threading.current_thread()
    for candidate in runs[1:]:
        body = (await _compare(lab, candidate["id"], runs[0]["id"], include_changed=True)).json()
        assert body["cases"]["paired"] == 6
    assert set(on_the_loop) == {
        "_paired_by_position",
        "_paired_by_key",
        "_slices",
        "_changed",
        "_metric_pairs",
        "_flipped",
    }
    assert not any(called for calls in on_the_loop.values() for called in calls), on_the_loop


async def test_pass_rates_measured_by_different_rules_are_not_compared(lab, fake):
    """A threshold lowered between two runs of the same answers reads as an improvement;
    it is none. The metric's pass rate, and the overall one, are inconclusive, saying why;
    the scores, which no rule changes, are compared as they are."""
    fake.reply = echo_reply
    target = await lab.openai_model(fake)
    cases = [  # 200: enough to show the scores unchanged
        {
            "input": f"question {i}",
            "expected_output": f"question {i} and more",
            "category": f"c{i % 2}",
        }
        for i in range(200)
    ]
    test_set = await lab.test_set(cases)
    similar = await lab.metric("similarity", threshold=0.95)
    baseline = await lab.run(test_set, target, metric_ids=[similar])
    await lab.wait(baseline["id"], seconds=60)
    changed = await lab.client.patch(
        f"/api/v1/metrics/{similar}", json={"threshold": 0.5}, headers=lab.account.headers
    )
    assert changed.status_code == 200, changed.text
    other = await lab.metric("contains", parameters={"value": "question"})
    candidate = await lab.run(test_set, target, metric_ids=[similar, other])
    await lab.wait(candidate["id"], seconds=60)

    found = (await _compare(lab, candidate["id"], baseline["id"])).json()
    [metric] = found["metrics"]
    rate = metric["pass_rate"]
    assert rate["delta"] > 0.5  # every case passes the lowered threshold, none the old one
    assert rate["verdict"] == "inconclusive"
    assert rate["reason"].endswith(
        ": inconclusive, not comparable: its rule changed between the runs (threshold 0.95 → 0.5)"
    ), rate["reason"]
    assert metric["score"]["verdict"] == "equivalent", metric["score"]["reason"]  # same scores
    assert found["overall"]["verdict"] == found["verdict"] == "inconclusive"
    assert found["slices"] and {s["pass_rate"]["verdict"] for s in found["slices"]} == {
        "inconclusive"
    }
    assert found["reason"].endswith(
        f"not comparable: {metric['name']}'s rule changed; "
        f"{(await lab.get(f'/metrics/{other}'))['name']} is in one run only"
    ), found["reason"]
