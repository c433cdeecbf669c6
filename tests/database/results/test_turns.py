"""Organizations take turns at the workers: one organization's long run (its chunks holding
every worker) hands a chunk's remaining cases back once another's job has waited, so that
job goes next; the run itself loses and repeats nothing."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from app.engine import executor
from tasks import queue
from tests.database.results.conftest import Lab, open_lab, working_lab
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def _long_then_short(
    fixtures: tuple[Any, ...], *, seconds_a_case: float, turn: float
) -> AsyncIterator[tuple[Lab, dict[str, Any], FakeOpenAI, float]]:
    """One organization's run of 40 cases, four chunks of ten holding the four workers (a
    lane each, a case taking `seconds_a_case`); once it has begun, another's run of one case
    against an instant model. Yields the long run's lab, the long run, its provider and the
    seconds the short run took to complete."""
    committed_database, app, owner_engine, database_urls, runtime, monkeypatch = fixtures
    monkeypatch.setattr(runtime.settings, "allow_private_networks", True)
    monkeypatch.setattr(runtime.settings, "run_chunk_size", 10)
    monkeypatch.setattr(runtime.settings, "chunk_turn_seconds", turn)
    monkeypatch.setattr(executor, "OTHERS_WAITED_SECONDS", turn / 2)
    with (
        FakeOpenAI(require_api_key="sk-test", latency=seconds_a_case) as slow,
        FakeOpenAI(require_api_key="sk-test") as fast,
    ):
        async with (
            working_lab(committed_database, app, owner_engine, database_urls, "long") as a,
            open_lab(app, owner_engine, "short") as b,
        ):
            long_set = await a.test_set([{"input": f"long {i}"} for i in range(40)])
            model, metric = await a.openai_model(slow), await a.any_answer()
            long_run = await a.run(long_set, model, metric_ids=[metric], concurrency=4)
            await a.wait_for_results(long_run["id"], 1)
            short_set = await b.test_set([{"input": "short"}])
            started = time.monotonic()
            short_run = await b.run(
                short_set, await b.openai_model(fast), metric_ids=[await b.any_answer()]
            )
            assert (await b.wait(short_run["id"]))["status"] == "completed"
            yield a, long_run, slow, time.monotonic() - started


async def test_another_organizations_run_goes_before_a_long_runs_later_cases(
    committed_database, app, owner_engine, database_urls, runtime, monkeypatch
):
    fixtures = (committed_database, app, owner_engine, database_urls, runtime, monkeypatch)
    async with _long_then_short(fixtures, seconds_a_case=1.0, turn=1.0) as (a, run, slow, took):
        # Behind the long run's chunks it waited for one to end (about eight seconds).
        assert took < 5.0, took
        finished = await a.wait(run["id"], 60)
        async with owner_engine.connect() as connection:
            jobs = (
                await connection.execute(
                    text(
                        "SELECT status, attempts, last_error FROM jobs"
                        " WHERE payload->>'run_id' = :run"
                    ),
                    {"run": run["id"]},
                )
            ).all()
    assert finished["status"] == "completed"
    assert finished["counts"]["done"] == 40 and finished["counts"]["errored"] == 0
    asked = Counter(str(r.json["messages"][-1]["content"]) for r in slow.requests)
    assert len(asked) == 40 and set(asked.values()) == {1}  # each case called once
    # Handed back is no failure: each chunk's attempts are those of one claim.
    assert {tuple(job) for job in jobs} == {("done", 1, None)}, jobs


async def test_one_waiting_job_takes_one_chunks_turn_however_long_its_cases(
    committed_database, app, owner_engine, database_urls, runtime, monkeypatch
):
    """A chunk handing back still counts as under way until its cases in flight end: its
    siblings asking meanwhile saw the same job waiting, and every chunk handed back for it
    (cases longer than a turn: agents, conversations)."""
    released: list[int] = []
    release = queue.release

    async def counted(session, *, worker, job_ids):
        released.append(len(job_ids))
        await release(session, worker=worker, job_ids=job_ids)

    monkeypatch.setattr(queue, "release", counted)
    fixtures = (committed_database, app, owner_engine, database_urls, runtime, monkeypatch)
    async with _long_then_short(fixtures, seconds_a_case=2.0, turn=0.5) as (a, run, _, _):
        assert released == [1], released  # one chunk's turn, not all four
        await a.post(f"/runs/{run['id']}/cancel", {}, expect=200)
