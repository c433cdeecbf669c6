"""A chunk writes what it holds once its last case is under way, not at its next tick: the
chunk's closing write then carries only the results of the cases still running, and the run
ends sooner after its last answer. A full batch (at most half a chunk that is not small) is
written at once too, while the chunk's other cases run."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from app.engine import executor, writer
from database.core import Database
from tests.database.results.conftest import ChunkContext, Lab
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.slow

CASES = 4


async def test_the_results_before_the_last_case_are_written_while_it_runs(
    quiet_lab: Lab, fake: FakeOpenAI, committed_database: Database, monkeypatch
) -> None:
    lab, organization = quiet_lab, quiet_lab.account.organization_id
    last_asked, answer_last = threading.Event(), threading.Event()

    def reply(request: dict[str, Any]) -> str:
        if request["messages"][-1]["content"].endswith(f"number {CASES - 1}"):
            last_asked.set()  # the fake answers in a thread of its own: this blocks only it
            answer_last.wait(20)
        return "an answer"

    fake.reply = reply
    cases = [{"input": f"question number {i}"} for i in range(CASES)]
    target = await lab.openai_model(fake)
    run = await lab.run(
        await lab.test_set(cases), target, metric_ids=[await lab.any_answer()], concurrency=1
    )
    monkeypatch.setattr(writer, "FLUSH_SECONDS", 60.0)  # no tick while the test looks
    payload = {"run_id": run["id"], "positions": list(range(CASES)), "repetitions": [0, 1]}
    chunk = asyncio.create_task(
        executor.run_chunk(ChunkContext(committed_database, organization, payload))
    )
    try:
        assert await asyncio.to_thread(last_asked.wait, 20), "the last case was never asked"
        # One lane: the cases before the last have their results, the last one is waiting.
        await lab.wait_for_results(run["id"], CASES - 1, seconds=5)
        assert (await lab.get(f"/runs/{run['id']}"))["counts"]["done"] == CASES - 1
    finally:
        answer_last.set()
        await asyncio.wait_for(chunk, 20)
    done = await lab.get(f"/runs/{run['id']}")
    assert (done["status"], done["counts"]["done"]) == ("completed", CASES)
    assert len(await lab.results(run["id"])) == CASES


async def test_a_full_batch_is_written_while_the_chunk_runs(
    quiet_lab: Lab, fake: FakeOpenAI, committed_database: Database, monkeypatch
) -> None:
    lab, organization = quiet_lab, quiet_lab.account.organization_id
    held, release = threading.Event(), threading.Event()
    # A batch is half the chunk, here (no chunk is small): the case held is neither the last
    # nor at a tick.
    batch, cases = 3, 7
    monkeypatch.setattr(writer, "FLUSH_MIN_ROWS", 1)

    def reply(request: dict[str, Any]) -> str:
        if request["messages"][-1]["content"].endswith(f"number {batch}"):
            held.set()
            release.wait(20)
        return "an answer"

    fake.reply = reply
    target = await lab.openai_model(fake)
    run = await lab.run(
        await lab.test_set([{"input": f"question number {i}"} for i in range(cases)]),
        target,
        metric_ids=[await lab.any_answer()],
        concurrency=1,
    )
    monkeypatch.setattr(writer, "FLUSH_SECONDS", 60.0)
    payload = {"run_id": run["id"], "positions": list(range(cases)), "repetitions": [0, 1]}
    chunk = asyncio.create_task(
        executor.run_chunk(ChunkContext(committed_database, organization, payload))
    )
    try:
        assert await asyncio.to_thread(held.wait, 20), "the held case was never asked"
        await lab.wait_for_results(run["id"], batch, seconds=5)
        assert (await lab.get(f"/runs/{run['id']}"))["counts"]["done"] == batch
    finally:
        release.set()
        await asyncio.wait_for(chunk, 20)
    done = await lab.get(f"/runs/{run['id']}")
    assert (done["status"], done["counts"]["done"]) == ("completed", cases)
