"""Scoring outputs without calling the target (a rescore of a run, outputs recorded with the
cases), and a run's budget."""

from __future__ import annotations

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import assert_problem

pytestmark = pytest.mark.slow


def _target_calls(fake: FakeOpenAI) -> int:
    return len([r for r in fake.requests if r.path.endswith("/chat/completions")])


async def test_rescore_calls_judges_but_never_the_target(lab, fake):
    target = await lab.openai_model(fake)
    test_set = await lab.test_set(
        [{"input": f"question {i}", "expected_output": f"question {i}"} for i in range(10)]
    )
    contains = await lab.metric("contains")
    run = await lab.run(test_set, target, metric_ids=[contains], repetitions=2)
    await lab.wait(run["id"])
    calls = _target_calls(fake)
    assert calls == 20

    with FakeOpenAI(require_api_key="sk-test") as judge_fake:
        judge_fake.reply = lambda body: '{"score": 0.8, "reason": "fine"}'
        judge = await lab.openai_model(judge_fake)
        relevance = await lab.metric("answer-relevance", judge_model_id=judge, threshold=0.9)
        rescored = await lab.post(
            f"/runs/{run['id']}/rescore", {"metric_ids": [contains, relevance]}, expect=202
        )
        child = rescored.json()
        assert child["parent_run_id"] == run["id"] and child["outputs_from_run_id"] == run["id"]
        assert child["counts"]["total"] == 20
        done = await lab.wait(child["id"])
        assert done["status"] == "completed"
        assert _target_calls(fake) == calls  # zero calls to the target
        assert _target_calls(judge_fake) == 20  # one judge call per stored output

    parent_outputs = {
        (r["position"], r["repetition"]): r["output"] for r in await lab.results(run["id"])
    }
    results = await lab.results(child["id"])
    assert {(r["position"], r["repetition"]): r["output"] for r in results} == parent_outputs
    assert all(r["status"] == "failed" for r in results)  # the judge's 0.8 misses 0.9
    assert done["spent"] == pytest.approx(
        sum(e["cost"] or 0 for r in results for e in r["evaluations"])
    )
    comparison = await lab.get(f"/runs/{child['id']}/compare", baseline=run["id"])
    assert comparison["overall"]["delta"] == pytest.approx(-1.0)
    # The same outputs, one more metric: the overall rate fell by the rule, not the answers.
    assert comparison["verdict"] == "inconclusive"
    assert comparison["reason"].endswith("is in one run only"), comparison["reason"]
    names = {m["name"] for m in comparison["metrics"]}
    assert len(names) == 1  # only the metric both runs have is compared

    no_metrics = await lab.post(f"/runs/{child['id']}/rescore", {"metric_ids": []})
    assert_problem(no_metrics, 422, field="metric_ids")

    # A rerun of the rescore's failed cases scores the same stored outputs again.
    with FakeOpenAI(require_api_key="sk-test") as judge_fake:
        judge_fake.reply = lambda body: '{"score": 0.95, "reason": "better"}'
        moved = await lab.client.patch(
            f"/api/v1/models/{judge}",
            json={"base_url": judge_fake.base_url, "api_key": "sk-test"},  # (a move takes it)
            headers=lab.account.headers,
        )
        assert moved.status_code == 200, moved.text
        rerun = await lab.post(f"/runs/{child['id']}/rerun", {}, expect=202)
        assert rerun.json()["outputs_from_run_id"] == run["id"]
        assert rerun.json()["counts"]["total"] == 20
        again = await lab.wait(rerun.json()["id"])
        assert again["counts"]["passed"] == 20
    assert _target_calls(fake) == calls


async def test_recorded_outputs_are_scored_without_a_target(lab, fake):
    test_set = await lab.test_set(
        [
            {
                "input": "capital of France",
                "expected_output": "Paris",
                "metadata": {"output": "Paris."},
            },
            {
                "input": "capital of Spain",
                "expected_output": "Madrid",
                "metadata": {"output": "Rome"},
            },
            {"input": "no answer logged", "expected_output": "x"},
        ]
    )
    contains = await lab.metric("contains")
    response = await lab.post(
        "/runs",
        {"test_set_id": test_set, "recorded_output": "output", "metric_ids": [contains]},
        expect=202,
    )
    run = response.json()
    assert run["target_model_id"] is None and run["recorded_output"] == "output"
    done = await lab.wait(run["id"])
    assert (done["counts"]["passed"], done["counts"]["failed"], done["counts"]["errored"]) == (
        1,
        1,
        1,
    )
    results = {r["position"]: r for r in await lab.results(run["id"])}
    assert results[0]["output"] == "Paris."
    assert results[2]["error_type"] == "recorded_output_missing"
    assert _target_calls(fake) == 0

    target = await lab.openai_model(fake)
    both = await lab.post(
        "/runs", {"test_set_id": test_set, "recorded_output": "output", "target_model_id": target}
    )
    assert_problem(both, 422, field="target_model_id")


async def test_no_latency_is_checked_where_no_call_was_timed(lab, fake):
    """A recorded answer, or one from the response cache, took no measured time: max-latency
    errs it (it passed it as 0 ms), while a timed call is checked as before."""
    fast = await lab.metric("max-latency", parameters={"ms": 60_000})
    recorded = await lab.post(
        "/runs",
        {
            "test_set_id": await lab.test_set([{"input": "q", "metadata": {"output": "a"}}]),
            "recorded_output": "output",
            "metric_ids": [fast],
        },
        expect=202,
    )
    await lab.wait(recorded.json()["id"])
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": "q"}])
    timed, cached = [
        await lab.wait((await lab.run(test_set, target, metric_ids=[fast], use_cache=True))["id"])
        for _ in range(2)
    ]
    rescored = {}
    for name, run in (("recorded", recorded.json()), ("timed", timed), ("cached", cached)):
        again = await lab.post(f"/runs/{run['id']}/rescore", {"metric_ids": [fast]}, expect=202)
        rescored[f"{name}, rescored"] = await lab.wait(again.json()["id"])
    outcome = {}
    for name, run in (
        ("recorded", recorded.json()),
        ("timed", timed),
        ("cached", cached),
        *rescored.items(),
    ):
        (result,) = await lab.results(run["id"])
        (evaluation,) = result["evaluations"]
        outcome[name] = (result["status"], evaluation["error"] is not None)
    assert outcome == {
        "recorded": ("errored", True),
        "timed": ("passed", False),
        "cached": ("errored", True),
        # A rescore's answers keep what their call was: timed, or not.
        "recorded, rescored": ("errored", True),
        "timed, rescored": ("passed", False),
        "cached, rescored": ("errored", True),
    }


async def test_a_budget_spent_by_the_last_results_still_completes_the_run(lab, fake):
    # 0.3 USD a call (3 tokens at 100,000 USD per million), three calls, 0.8 USD: the third
    # result spends the rest, and is the last.
    target = await lab.openai_model(fake, input_price_per_mtok=100_000, output_price_per_mtok=0)
    test_set = await lab.test_set([{"input": f"question number {i}"} for i in range(3)])
    run = await lab.run(
        test_set, target, metric_ids=[await lab.any_answer()], concurrency=1, max_cost=0.8
    )
    done = await lab.wait(run["id"])
    assert (done["status"], done["counts"]["done"], done["error"]) == ("completed", 3, None)
    assert done["spent"] == pytest.approx(0.9)

    # More repetitions without a budget of their own: the run's is spent.
    refused = await lab.post(f"/runs/{run['id']}/repeat", {"cases": "all"})
    assert "budget is spent" in assert_problem(refused, 409)["detail"]
    repeated = await lab.post(
        f"/runs/{run['id']}/repeat", {"cases": "all", "max_cost": 0.5}, expect=202
    )
    assert repeated.json()["max_cost"] == pytest.approx(0.9 + 0.5)
    again = await lab.wait(run["id"])
    assert (again["status"], again["counts"]["done"]) == ("stopped", 5)
    assert again["spent"] == pytest.approx(1.5)


async def test_a_run_stops_when_its_budget_is_spent(lab, fake):
    # About 10 tokens a call at 100,000 USD per million: some 1 USD a call.
    target = await lab.openai_model(fake, input_price_per_mtok=100_000, output_price_per_mtok=0)
    test_set = await lab.test_set([{"input": f"question number {i}"} for i in range(30)])
    run = await lab.run(
        test_set, target, metric_ids=[await lab.any_answer()], concurrency=1, max_cost=2.5
    )
    done = await lab.wait(run["id"], seconds=60)
    assert done["status"] == "stopped"
    assert "budget reached" in done["error"]
    assert done["spent"] >= 2.5
    assert 3 <= done["counts"]["done"] < 30
    per_call = done["spent"] / done["counts"]["done"]
    assert done["spent"] - per_call < 2.5  # no case started once the budget was gone
    summary = await lab.get(f"/runs/{run['id']}/summary")
    assert summary["status"] == "stopped"


async def test_outputs_imported_with_the_cases_are_scored_and_compared(lab, fake):
    """Another tool's outputs, as an extra CSV column, scored like a run and compared."""
    body = {"project_id": lab.project_id, "name": "imported"}
    test_set = (await lab.post("/test-sets", body, expect=201)).json()["id"]
    rows = ["input,expected_output,output,theirs"] + [
        f"q{i},answer {i},answer {i} indeed,{'answer ' + str(i) if i % 2 else 'no idea'}"
        for i in range(20)
    ]
    imported = await lab.client.post(
        f"/api/v1/test-sets/{test_set}/import",
        content="\n".join(rows).encode(),
        headers={**lab.account.headers, "Content-Type": "text/csv"},
    )
    assert imported.status_code in (200, 201), imported.text
    contains = await lab.metric("contains")
    runs = {}
    for column in ("output", "theirs"):
        response = await lab.post(
            "/runs",
            {"test_set_id": test_set, "recorded_output": column, "metric_ids": [contains]},
            expect=202,
        )
        runs[column] = await lab.wait(response.json()["id"])
    assert runs["output"]["counts"]["passed"] == 20
    assert runs["theirs"]["counts"]["passed"] == 10
    comparison = await lab.get(
        f"/runs/{runs['theirs']['id']}/compare", baseline=runs["output"]["id"]
    )
    assert comparison["overall"]["delta"] == pytest.approx(-0.5)
    assert comparison["flips"]["pass_to_fail"] == 10
    assert _target_calls(fake) == 0


async def test_a_rescores_rerun_ends_though_its_source_has_more_repetitions_since(lab, fake):
    """The rerun scores the outputs of the rescore's own repetitions: its total counts those,
    not the ones its source was given after the rescore (which it never does)."""
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": f"q{i}"} for i in range(3)])
    source = await lab.run(test_set, target, metric_ids=[await lab.any_answer()])
    assert (await lab.wait(source["id"]))["status"] == "completed"
    strict = await lab.metric("word-count", parameters={"min": 10_000})
    rescore = await lab.post(f"/runs/{source['id']}/rescore", {"metric_ids": [strict]}, expect=202)
    assert (await lab.wait(rescore.json()["id"]))["counts"]["failed"] == 3

    await lab.post(f"/runs/{source['id']}/repeat", {"repetitions": 1, "cases": "all"}, expect=202)
    assert (await lab.wait(source["id"]))["counts"]["total"] == 6

    rerun = await lab.post(f"/runs/{rescore.json()['id']}/rerun", {}, expect=202)
    assert rerun.json()["counts"]["total"] == 3
    done = await lab.wait(rerun.json()["id"])
    assert done["status"] == "completed" and done["counts"]["failed"] == 3


async def test_a_run_or_rescore_naming_a_metric_twice_is_refused_before_anything_is_written(
    lab, fake
):
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": "question", "expected_output": "question"}])
    contains = await lab.metric("contains")
    body = {"test_set_id": test_set, "target_model_id": target, "metric_ids": [contains] * 2}
    assert_problem(await lab.post("/runs", body), 422, field="metric_ids")
    assert (await lab.get("/runs", test_set_id=test_set))["total"] == 0

    run = await lab.run(test_set, target, metric_ids=[contains])
    await lab.wait(run["id"])
    twice = await lab.post(f"/runs/{run['id']}/rescore", {"metric_ids": [contains] * 2})
    assert_problem(twice, 422, field="metric_ids")
    assert (await lab.get("/runs", test_set_id=test_set))["total"] == 1
