"""An answer no call was timed for (the response cache's, or one recorded with its case) stores
no latency: stored as 0 ms, it counted as an instant answer in the run's percentiles and made
a comparison with a timed run show a speed-up that never happened. A rescore keeps its
source's latency, timed or not."""

from __future__ import annotations

from typing import Any

import pytest

from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.slow

CASES = 4


async def _latencies(lab: Lab, run_id: str) -> list[float | None]:
    return [r["latency_ms"] for r in sorted(await lab.results(run_id), key=lambda r: r["position"])]


async def _rescored(lab: Lab, run_id: str, metric: str) -> dict[str, Any]:
    made = await lab.post(f"/runs/{run_id}/rescore", {"metric_ids": [metric]}, expect=202)
    return await lab.wait(made.json()["id"])


async def test_cached_answers_store_no_latency_and_count_in_no_latency_figure(
    lab: Lab, fake: FakeOpenAI
):
    fake.latency = 0.05
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": f"question {i}"} for i in range(CASES)])
    metric = await lab.any_answer()
    timed, cached = [
        await lab.wait((await lab.run(test_set, target, metric_ids=[metric], use_cache=True))["id"])
        for _ in range(2)
    ]
    assert (timed["status"], cached["status"]) == ("completed", "completed")
    assert all(r["cached"] for r in await lab.results(cached["id"]))
    timed_latencies = await _latencies(lab, timed["id"])
    assert all(latency is not None and latency > 0 for latency in timed_latencies)
    assert await _latencies(lab, cached["id"]) == [None] * CASES

    summary = await lab.get(f"/runs/{cached['id']}/summary")
    assert summary["latency_ms"] == {"p50": None, "p95": None, "p99": None, "mean": None}
    assert (await lab.get(f"/runs/{timed['id']}/summary"))["latency_ms"]["p50"] is not None

    # No case has a latency on both sides: the comparison has no latency to compare.
    compared = await lab.get(f"/runs/{cached['id']}/compare", baseline=timed["id"])
    unknown = {"baseline": None, "candidate": None, "delta": None, "ci": None}
    assert compared["latency_p50_ms"] == unknown
    assert compared["latency_p95_ms"] == unknown

    # A rescore keeps its source's latency: none for the cached answers, the timed ones' own.
    assert (
        await _latencies(lab, (await _rescored(lab, cached["id"], metric))["id"]) == [None] * CASES
    )
    rescore_of_timed = await _rescored(lab, timed["id"], metric)
    assert await _latencies(lab, rescore_of_timed["id"]) == timed_latencies
    # A rescore's results are `cached` (no call made); its own rescore still keeps the latency.
    again = await _rescored(lab, rescore_of_timed["id"], metric)
    assert await _latencies(lab, again["id"]) == timed_latencies


async def test_recorded_answers_store_no_latency(lab: Lab):
    test_set = await lab.test_set(
        [{"input": f"question {i}", "metadata": {"output": f"answer {i}"}} for i in range(CASES)]
    )
    metric = await lab.any_answer()
    made = await lab.post(
        "/runs",
        {"test_set_id": test_set, "recorded_output": "output", "metric_ids": [metric]},
        expect=202,
    )
    run = await lab.wait(made.json()["id"])
    assert run["status"] == "completed"
    assert await _latencies(lab, run["id"]) == [None] * CASES
    summary = await lab.get(f"/runs/{run['id']}/summary")
    assert summary["latency_ms"]["p50"] is None and summary["latency_ms"]["mean"] is None
    assert await _latencies(lab, (await _rescored(lab, run["id"], metric))["id"]) == [None] * CASES
