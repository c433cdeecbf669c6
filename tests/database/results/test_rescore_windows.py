"""A rescore reads its source results a window of bytes at a time, as its cases are taken, not
a chunk's outputs at once (an output may be megabytes, a chunk hundreds of them)."""

from __future__ import annotations

from typing import Any

import pytest

from app.engine import sources
from app.engine.sources import windows
from tests.fakes.openai_server import echo_reply

pytestmark = pytest.mark.slow

CASES = 9
PADDING = 200_000  # characters of each output beyond the echo


def test_windows_cut_before_the_budget_and_hold_one_result_at_least(monkeypatch):
    monkeypatch.setattr(sources, "WINDOW_BYTES", 25)
    keys = [(0, 0), (0, 1), (1, 0), (2, 0), (3, 0), (4, 0)]
    sizes = dict(zip(keys, [10, 10, 10, 40, 5, 25], strict=True))
    assert windows(keys, sizes) == [[(0, 0), (0, 1)], [(1, 0)], [(2, 0)], [(3, 0)], [(4, 0)]]
    assert windows([], {}) == []


async def test_a_rescore_of_large_outputs_reads_its_sources_a_window_at_a_time(
    lab, fake, monkeypatch
):
    fake.reply = lambda body: echo_reply(body) + " " + "x" * PADDING
    target = await lab.openai_model(fake)
    test_set = await lab.test_set(
        [{"input": f"question {i}", "expected_output": "question"} for i in range(CASES)]
    )
    contains = await lab.metric("contains")
    run = await lab.run(test_set, target, metric_ids=[contains])
    assert (await lab.wait(run["id"]))["status"] == "completed"

    # Two results' texts to a window: five reads for nine sources.
    monkeypatch.setattr(sources, "WINDOW_BYTES", 2 * PADDING + PADDING // 2)
    reads: list[list[Any]] = []
    source_results = sources.rescore_sources.source_results

    async def counted(session: Any, run_id: Any, keys: Any) -> Any:
        found = await source_results(session, run_id, keys)
        reads.append(sorted(len(result.output or "") for result in found.values()))
        return found

    monkeypatch.setattr(sources.rescore_sources, "source_results", counted)
    rescored = await lab.post(f"/runs/{run['id']}/rescore", {"metric_ids": [contains]}, expect=202)
    child = rescored.json()
    assert (await lab.wait(child["id"]))["status"] == "completed"
    assert len(reads) == 5 and all(1 <= len(read) <= 2 for read in reads)
    assert all(size > PADDING for read in reads for size in read)
    outputs = {r["position"]: r["output"] for r in await lab.results(run["id"])}
    rescored_outputs = {r["position"]: r["output"] for r in await lab.results(child["id"])}
    assert rescored_outputs == outputs and len(outputs) == CASES
    assert all(outputs[i].startswith(f"echo: question {i} ") for i in range(CASES))
