"""`POST /runs/{id}/resume`: a run that ended before completing goes on with only the cases
that have no result; what it wrote stays, nothing is called twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx

from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import assert_problem

CASES = 12


async def _resume_once_stopped(lab: Lab, run_id: str) -> httpx.Response:
    """A cancelled run's lanes finish their calls in flight first (409 meanwhile)."""
    deadline = time.monotonic() + 15
    while (response := await lab.post(f"/runs/{run_id}/resume", {})).status_code == 409:
        assert "still stopping" in response.text, response.text
        assert time.monotonic() < deadline, "the cancelled run's work never stopped"
        await asyncio.sleep(0.1)
    assert response.status_code == 202, response.text
    return response


async def test_a_cancelled_run_resumes_with_the_cases_it_lacks(lab: Lab, fake: FakeOpenAI):
    fake.latency = 0.15
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": f"q{i}"} for i in range(CASES)])
    run = await lab.run(test_set, target, metric_ids=[await lab.any_answer()], concurrency=2)
    await lab.wait_for_results(run["id"], 3)
    cancelled = await lab.post(f"/runs/{run['id']}/cancel", {}, expect=200)
    assert cancelled.json()["status"] == "cancelled"
    ended = await lab.wait(run["id"])
    kept = {r["position"] for r in await lab.results(run["id"])}
    assert 3 <= len(kept) < CASES, "the run finished before it was cancelled: nothing tested"

    resumed = await _resume_once_stopped(lab, run["id"])
    assert resumed.json()["id"] == run["id"]
    assert resumed.json()["status"] == "queued"
    done = await lab.wait(run["id"])
    assert done["status"] == "completed", done
    results = await lab.results(run["id"])
    assert sorted((r["position"], r["repetition"]) for r in results) == [
        (p, 0) for p in range(CASES)
    ]
    # A case with a result before the resume was never called again.
    asked = Counter(r.json["messages"][-1]["content"] for r in fake.requests if r.json)
    assert all(asked[f"q{i}"] == 1 for i in kept), asked
    assert set(asked) == {f"q{i}" for i in range(CASES)}
    assert ended["counts"]["done"] == len(kept)

    again = await lab.post(f"/runs/{run['id']}/resume", {})
    assert_problem(again, 409)


async def test_a_run_cancelled_before_a_worker_took_its_chunks_resumes_at_once(
    quiet_lab: Lab, fake: FakeOpenAI
):
    """Its chunks not yet begun are called off with it: before, they stayed queued until some
    worker claimed them only to find the run ended, and behind another organization's long
    run `resume` answered 409 "still stopping" all that time, though nothing ran."""
    target = await quiet_lab.openai_model(fake)
    test_set = await quiet_lab.test_set([{"input": f"q{i}"} for i in range(CASES)])
    run = await quiet_lab.run(test_set, target, metric_ids=[await quiet_lab.any_answer()])
    await quiet_lab.post(f"/runs/{run['id']}/cancel", {}, expect=200)
    resumed = await quiet_lab.post(f"/runs/{run['id']}/resume", {}, expect=202)
    assert resumed.json()["status"] == "queued"
