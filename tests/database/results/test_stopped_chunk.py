"""A chunk that stops before its end (a worker shutting down cancels it; a case raises) still
writes the results already answered: each is a paid call, and the chunk's resumption would
otherwise pay for it again. What stopped the chunk is what it raises."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from app.engine import executor, writer
from database.core import Database
from tests.database.results.conftest import ChunkContext, Lab
from tests.fakes.openai_server import FakeOpenAI, message_text

pytestmark = pytest.mark.slow

CASES = 6
STOPS_AT = 3  # one lane: the cases before it are answered and buffered, none written


@pytest.mark.parametrize("stop", ["cancelled", "a case raises"])
async def test_a_stopped_chunk_writes_the_results_it_holds(
    stop: str,
    quiet_lab: Lab,
    fake: FakeOpenAI,
    committed_database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lab, organization = quiet_lab, quiet_lab.account.organization_id
    asked, answer = threading.Event(), threading.Event()

    def reply(request: dict[str, Any]) -> str:
        if request["messages"][-1]["content"].endswith(f"number {STOPS_AT}"):
            asked.set()  # the fake answers in a thread of its own: this blocks only it
            answer.wait(20)
        return "an answer"

    fake.reply = reply
    target = await lab.openai_model(fake)
    run = await lab.run(
        await lab.test_set([{"input": f"question number {i}"} for i in range(CASES)]),
        target,
        metric_ids=[await lab.any_answer()],
        concurrency=1,
    )
    # No tick and no early batch: only the chunk's own writes could store the results.
    monkeypatch.setattr(writer, "FLUSH_SECONDS", 60.0)
    monkeypatch.setattr(writer, "FLUSH_MIN_ROWS", 1_000)
    run_case = executor.run_case
    if stop == "a case raises":

        async def failing(*args: Any, **kwargs: Any) -> Any:
            if args[3].position == STOPS_AT:
                raise RuntimeError("the case broke")
            return await run_case(*args, **kwargs)

        monkeypatch.setattr(executor, "run_case", failing)

    payload = {"run_id": run["id"], "positions": list(range(CASES)), "repetitions": [0, 1]}
    chunk = asyncio.create_task(
        executor.run_chunk(ChunkContext(committed_database, organization, payload))
    )
    try:
        if stop == "cancelled":
            assert await asyncio.to_thread(asked.wait, 20), "the held case was never asked"
            assert (await lab.get(f"/runs/{run['id']}"))["counts"]["done"] == 0
            chunk.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(chunk, 20)
        else:
            with pytest.raises(RuntimeError, match="the case broke"):
                await asyncio.wait_for(chunk, 20)
    finally:
        answer.set()

    stopped = await lab.get(f"/runs/{run['id']}")
    assert (stopped["status"], stopped["counts"]["done"]) == ("running", STOPS_AT)
    results = await lab.results(run["id"])
    assert sorted(result["position"] for result in results) == list(range(STOPS_AT))

    # Resumed, the chunk asks only what has no result yet.
    monkeypatch.setattr(executor, "run_case", run_case)
    fake.reset()
    await executor.run_chunk(ChunkContext(committed_database, organization, payload))
    asked_again = sorted(message_text(r.json["messages"][-1]) for r in fake.requests)
    assert asked_again == [f"question number {i}" for i in range(STOPS_AT, CASES)]
    done = await lab.get(f"/runs/{run['id']}")
    assert (done["status"], done["counts"]["done"]) == ("completed", CASES)
