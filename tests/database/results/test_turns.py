"""Organizations take turns at the workers: one organization's long run (its chunks holding
every worker) hands a chunk's remaining cases back once another's job has waited, so that
job goes next; the run itself loses and repeats nothing."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy import text

from app.engine import executor
from tasks import queue
from tests.database.results.conftest import open_lab, working_lab
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.slow


async def test_another_organizations_run_goes_before_a_long_runs_later_cases(
    committed_database, app, owner_engine, database_urls, runtime, monkeypatch
):
    monkeypatch.setattr(runtime.settings, "allow_private_networks", True)
    monkeypatch.setattr(runtime.settings, "run_chunk_size", 10)  # four chunks, four workers
    monkeypatch.setattr(runtime.settings, "chunk_turn_seconds", 1.0)
    monkeypatch.setattr(executor, "OTHERS_WAITED_SECONDS", 0.5)
    with (
        FakeOpenAI(require_api_key="sk-test", latency=1.0) as slow,
        FakeOpenAI(require_api_key="sk-test") as fast,
    ):
        async with (
            working_lab(committed_database, app, owner_engine, database_urls, "long") as a,
            open_lab(app, owner_engine, "short") as b,
        ):
            long_set = await a.test_set([{"input": f"long {i}"} for i in range(40)])
            long_run = await a.run(
                long_set,
                await a.openai_model(slow),
                metric_ids=[await a.any_answer()],
                concurrency=4,  # a lane a chunk: each chunk's ten cases take ten seconds
            )
            await a.wait_for_results(long_run["id"], 2)
            short_set = await b.test_set([{"input": "short"}])
            started = time.monotonic()
            short_run = await b.run(
                short_set, await b.openai_model(fast), metric_ids=[await b.any_answer()]
            )
            assert (await b.wait(short_run["id"]))["status"] == "completed"
            waited = time.monotonic() - started
            # Behind the long run's chunks it waited for one to end (about eight seconds).
            assert waited < 5.0, waited

            finished = await a.wait(long_run["id"], 60)
            assert finished["status"] == "completed"
            assert finished["counts"]["done"] == 40 and finished["counts"]["errored"] == 0
            asked = Counter(str(r.json["messages"][-1]["content"]) for r in slow.requests)
            assert len(asked) == 40 and set(asked.values()) == {1}  # each case called once
            async with owner_engine.connect() as connection:
                jobs = (
                    await connection.execute(
                        text(
                            "SELECT status, attempts, last_error FROM jobs"
                            " WHERE payload->>'run_id' = :run"
                        ),
                        {"run": long_run["id"]},
                    )
                ).all()
            # Handed back is no failure: each chunk's attempts are those of one claim.
            assert {tuple(job) for job in jobs} == {("done", 1, None)}, jobs


async def test_one_waiting_job_takes_one_chunks_turn_however_long_its_cases(
    committed_database, app, owner_engine, database_urls, runtime, monkeypatch
):
    """A chunk handing back still counts as under way until its cases in flight end: its
    siblings asking meanwhile saw the same job waiting, and every chunk handed back for it
    (cases longer than a turn: agents, conversations)."""
    monkeypatch.setattr(runtime.settings, "allow_private_networks", True)
    monkeypatch.setattr(runtime.settings, "run_chunk_size", 10)
    monkeypatch.setattr(runtime.settings, "chunk_turn_seconds", 0.5)
    monkeypatch.setattr(executor, "OTHERS_WAITED_SECONDS", 0.2)
    released: list[int] = []
    release = queue.release

    async def counted(session, *, worker, job_ids):
        released.append(len(job_ids))
        await release(session, worker=worker, job_ids=job_ids)

    monkeypatch.setattr(queue, "release", counted)
    with (
        FakeOpenAI(require_api_key="sk-test", latency=2.0) as slow,  # four turns a case
        FakeOpenAI(require_api_key="sk-test") as fast,
    ):
        async with (
            working_lab(committed_database, app, owner_engine, database_urls, "long") as a,
            open_lab(app, owner_engine, "short") as b,
        ):
            long_set = await a.test_set([{"input": f"long {i}"} for i in range(40)])
            long_run = await a.run(
                long_set,
                await a.openai_model(slow),
                metric_ids=[await a.any_answer()],
                concurrency=4,
            )
            await a.wait_for_results(long_run["id"], 1)
            short_set = await b.test_set([{"input": "short"}])
            short_run = await b.run(
                short_set, await b.openai_model(fast), metric_ids=[await b.any_answer()]
            )
            assert (await b.wait(short_run["id"]))["status"] == "completed"
            assert released == [1], released  # one chunk's turn, not all four
            await a.post(f"/runs/{long_run['id']}/cancel", {}, expect=200)
