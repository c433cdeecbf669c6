"""A run's concurrency is the most cases it has in flight at once, however many chunks it is
split into: each chunk's lanes are its share of the concurrency rounded up, and the run's own
count holds them to it."""

from __future__ import annotations

import threading

import pytest


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_a_run_never_has_more_cases_in_flight_than_its_concurrency(
    lab, fake, runtime, monkeypatch, concurrency
):
    monkeypatch.setattr(runtime.settings, "run_chunk_size", 2)  # 12 cases: six chunks
    fake.latency = 0.2
    lock = threading.Lock()  # the fake answers on a thread of its own
    in_flight = {"now": 0, "most": 0}
    answer_after = fake.sleep

    async def counted(seconds: float) -> None:
        with lock:
            in_flight["now"] += 1
            in_flight["most"] = max(in_flight["most"], in_flight["now"])
        try:
            await answer_after(seconds)
        finally:
            with lock:
                in_flight["now"] -= 1

    fake.sleep = counted
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": f"q{i}"} for i in range(12)])
    metric = await lab.any_answer()
    run = await lab.run(test_set, target, metric_ids=[metric], concurrency=concurrency)
    done = await lab.wait(run["id"])
    assert done["status"] == "completed" and done["counts"]["passed"] == 12
    assert in_flight["most"] == concurrency
