"""Repetitions as data: per-case passes, pass@k, pass^k and flakiness; more repetitions of the
undecided cases of a finished run; and the one definition of a pass rate."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from math import comb

import pytest
from sqlalchemy import update

from database.core import Tenant
from database.results import crud
from database.results.models import Run
from tests.database.organizations.audit_helpers import audit_entries
from tests.fakes.server import Fault
from tests.helpers import assert_problem

pytestmark = pytest.mark.slow


def _alternating():
    """Steady cases always pass; a case whose input says 'coin' passes every other call."""
    tosses = itertools.count()

    def reply(body: dict) -> str:
        text = json.dumps(body["messages"])
        if "coin" in text:
            return "yes" if next(tosses) % 2 == 0 else "no"
        return "yes" if "good" in text else "no"

    return reply


async def test_repetitions_report_pass_at_k_flakiness_and_more_repetitions_of_the_flaky(lab, fake):
    fake.reply = _alternating()
    target = await lab.openai_model(fake)
    inputs = ["good 1", "good 2", "bad 1", "coin 1", "coin 2"]
    test_set = await lab.test_set([{"input": text} for text in inputs])
    metric = await lab.metric("contains", parameters={"value": "yes"})
    run = await lab.run(test_set, target, metric_ids=[metric], repetitions=4, concurrency=1)
    await lab.wait(run["id"])

    summary = await lab.get(f"/runs/{run['id']}/summary")
    repetitions = summary["repetitions"]
    assert repetitions["k"] == 4 and repetitions["flaky"] == 2
    assert {c["position"] for c in repetitions["flaky_cases"]} == {3, 4}
    # Cases pass 4, 4, 0, 2 and 2 of 4 times: pass@1 is their mean share.
    assert repetitions["pass_at_1"] == pytest.approx((1 + 1 + 0 + 0.5 + 0.5) / 5)
    low, high = repetitions["pass_at_1_ci"]
    assert low <= repetitions["pass_at_1"] <= high
    expected_at_2 = (1 + 1 + 0 + 2 * (1 - comb(2, 2) / comb(4, 2))) / 5
    assert repetitions["pass_at_k"]["2"] == pytest.approx(expected_at_2, abs=1e-6)
    assert repetitions["pass_hat_k"]["4"] == pytest.approx(2 / 5)
    assert summary["pass_rate"] == pytest.approx(0.6)

    cases = await lab.get(f"/runs/{run['id']}/cases", flaky="true")
    assert cases["total"] == 2
    coin = cases["items"][0]
    assert (coin["repetitions"], coin["passed"], coin["flaky"]) == (4, 2, True)
    for k in range(1, 5):
        assert coin["pass_at_k"][str(k)] == pytest.approx(1 - comb(2, k) / comb(4, k), abs=1e-6)
        assert coin["pass_hat_k"][str(k)] == pytest.approx(comb(2, k) / comb(4, k), abs=1e-6)

    # Pages are cut after the filter, and count what it keeps, past the last page too.
    pages = {
        (flaky, limit, offset): await lab.get(
            f"/runs/{run['id']}/cases",
            **({"flaky": flaky} if flaky else {}),
            limit=limit,
            offset=offset,
        )
        for flaky, limit, offset in [
            ("false", 50, 0),
            ("true", 1, 1),
            ("true", 1, 5),
            (None, 2, 3),
            (None, 2, 9),
        ]
    }
    found = {
        asked: ([case["position"] for case in page["items"]], page["total"])
        for asked, page in pages.items()
    }
    assert found == {
        ("false", 50, 0): ([0, 1, 2], 3),
        ("true", 1, 1): ([4], 2),
        ("true", 1, 5): ([], 2),
        (None, 2, 3): ([3, 4], 5),
        (None, 2, 9): ([], 5),
    }

    calls = len(fake.requests)
    repeated = await lab.post(
        f"/runs/{run['id']}/repeat", {"repetitions": 2, "cases": "flaky"}, expect=202
    )
    assert repeated.json()["counts"]["total"] == 20 + 2 * 2
    done = await lab.wait(run["id"])
    assert done["status"] == "completed" and done["counts"]["done"] == 24
    assert len(fake.requests) - calls == 4  # only the flaky cases were called again
    keys = {(r["position"], r["repetition"]) for r in await lab.results(run["id"])}
    assert {(3, 4), (3, 5), (4, 4), (4, 5)} <= keys and (0, 4) not in keys
    again = await lab.get(f"/runs/{run['id']}/summary")
    assert again["repetitions"]["k"] == 6
    assert again["counts"]["done"] == 24


async def test_one_pass_rate_definition_for_the_run_and_its_groups(lab, fake):
    """A behavior with an errored case: errored results are counted apart, and the group's
    pass rate and the run's are both passed / (passed + failed)."""
    target = await lab.openai_model(fake)
    cases = [
        {"input": f"q{i}", "behavior": "a" if i < 4 else "b", "expected_output": f"q{i}"}
        for i in range(6)
    ]
    cases[1]["expected_output"] = "never"
    test_set = await lab.test_set(cases)
    metric = await lab.metric("contains")
    fake.enqueue(Fault.http(400))  # the first case errors
    run = await lab.run(test_set, target, metric_ids=[metric], concurrency=1)
    await lab.wait(run["id"])
    summary = await lab.get(f"/runs/{run['id']}/summary")
    assert summary["counts"]["errored"] == 1
    assert summary["pass_rate"] == pytest.approx(4 / 5)
    assert summary["error_rate"] == pytest.approx(1 / 6, abs=1e-4)
    groups = {g["value"]: g for g in summary["by_behavior"]}
    assert groups["a"] == {"value": "a", "results": 4, "errored": 1, "pass_rate": 0.6667}
    assert groups["b"] == {"value": "b", "results": 2, "errored": 0, "pass_rate": 1.0}
    [contains] = summary["metrics"]
    assert (contains["pass_rate"], contains["evaluated"]) == (0.8, 5)


async def test_repeat_refuses_what_it_cannot_do(lab, fake):
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": "yes"}])
    metric = await lab.metric("contains", parameters={"value": "yes"})
    run = await lab.run(test_set, target, metric_ids=[metric])
    await lab.wait(run["id"])
    steady = await lab.post(f"/runs/{run['id']}/repeat", {"cases": "flaky"})
    assert "no flaky case" in assert_problem(steady, 409)["detail"]
    # No body: one more repetition of the undecided cases (here none), as its defaults say.
    bare = await lab.client.post(f"/api/v1/runs/{run['id']}/repeat", headers=lab.account.headers)
    assert "no undecided case" in assert_problem(bare, 409)["detail"]
    assert_problem(await lab.post(f"/runs/{run['id']}/repeat", {"repetitions": 0}), 422)

    many = await lab.run(test_set, target, metric_ids=[metric], repetitions=99, concurrency=20)
    await lab.wait(many["id"])
    too_many = await lab.post(f"/runs/{many['id']}/repeat", {"repetitions": 2, "cases": "all"})
    assert "at most 100" in assert_problem(too_many, 422, field="repetitions")["detail"]
    await lab.post(f"/runs/{many['id']}/repeat", {"repetitions": 1, "cases": "all"}, expect=202)


async def test_a_baseline_is_not_reopened_by_a_repeat(lab, fake):
    """A baseline reopened would be no baseline (its gates refused or left undecided until
    it completed again), and its figures would move under the verdicts made against it."""
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": "yes"}, {"input": "also yes"}])
    metric = await lab.metric("contains", parameters={"value": "yes"})
    first, second = [await lab.run(test_set, target, metric_ids=[metric]) for _ in range(2)]
    for run in (first, second):
        await lab.wait(run["id"])
    fake.latency = 5.0  # the gated run stays under way while its baseline is asked to repeat
    gated = await lab.run(
        test_set, target, metric_ids=[metric], gate={"baseline": second["id"]}, concurrency=1
    )
    await lab.client.put(
        f"/api/v1/projects/{lab.project_id}/baseline",
        json={"run_id": first["id"]},
        headers=lab.account.headers,
    )
    for baseline, said in ((first, "the project's baseline"), (second, gated["id"])):
        refused = await lab.post(f"/runs/{baseline['id']}/repeat", {"cases": "all"})
        assert said in assert_problem(refused, 409)["detail"]
        assert (await lab.get(f"/runs/{baseline['id']}"))["status"] == "completed"
    await lab.post(f"/runs/{gated['id']}/cancel", {}, expect=200)
    await lab.wait(gated["id"])
    await lab.post(f"/runs/{second['id']}/repeat", {"cases": "all"}, expect=202)


async def test_a_repeat_is_audited_with_the_verdict_it_replaces(lab, fake):
    """A repeat decides a run's gate again: "retry until green" leaves a trace."""
    answers = iter(["no", "yes"])
    fake.reply = lambda body: next(answers, "yes")
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": "q"}])
    metric = await lab.metric("contains", parameters={"value": "yes"})
    run = await lab.run(test_set, target, metric_ids=[metric], gate={"min_pass_rate": 0.9})
    assert (await lab.wait(run["id"]))["gate_result"]["status"] == "failed"
    await lab.post(f"/runs/{run['id']}/repeat", {"cases": "all"}, expect=202)
    assert (await lab.wait(run["id"]))["gate_result"]["status"] == "failed"  # 1 of 2 passed
    [entry] = await audit_entries(
        lab.client, lab.account, action="run.repeated", target_id=run["id"]
    )
    assert entry["details"]["replaced_gate_result"]["status"] == "failed"
    assert "below the floor" in entry["details"]["replaced_gate_result"]["reasons"][0]
    assert (entry["details"]["cases"], entry["details"]["repetitions"]) == ("all", 1)


async def test_a_baseline_being_set_waits_for_a_repeat_under_way(lab, fake, committed_database):
    """Setting a baseline read the run as completed without a lock: a repeat reopening it at
    that moment committed first, and the project's baseline was a reopened run. The read
    waits for the repeat's lock, then sees the run reopened."""
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": "yes"}])
    run = await lab.run(test_set, target, metric_ids=[await lab.any_answer()])
    await lab.wait(run["id"])
    async with committed_database.transaction(Tenant(lab.account.organization_id)) as session:
        # A repeat under way: the run locked, then reopened (crud.reopen's change).
        await crud.get_run(session, uuid.UUID(run["id"]), for_update=True)
        setting = asyncio.ensure_future(
            lab.client.put(
                f"/api/v1/projects/{lab.project_id}/baseline",
                json={"run_id": run["id"]},
                headers=lab.account.headers,
            )
        )
        await asyncio.sleep(0.5)
        await session.execute(
            update(Run).where(Run.id == uuid.UUID(run["id"])).values(status="queued")
        )
    assert "queued" in assert_problem(await setting, 409)["detail"]
    project = await lab.get(f"/projects/{lab.project_id}")
    assert project["baseline_run_id"] is None
