"""A run whose chunk jobs name no repetitions (as migration 0006 made them of legacy run starts:
every repetition of the run) is cancelled and resumed as any other: its chunks queued again,
once each, however often it was resumed before."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI

CASES = 12
CHUNK_SIZE = 8  # with 2 repetitions: chunks of 4 cases


async def _chunk_jobs(owner_engine: AsyncEngine, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with owner_engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT status, payload FROM jobs WHERE idempotency_key LIKE :key"
                " ORDER BY created_at, payload ->> 'positions'"
            ),
            {"key": f"run:{run_id}:%"},
        )
        return [(status, payload) for status, payload in rows.all()]


async def _cancel_and_resume(lab: Lab, run_id: str) -> None:
    await lab.post(f"/runs/{run_id}/cancel", {}, expect=200)
    resumed = await lab.post(f"/runs/{run_id}/resume", {}, expect=202)
    assert resumed.json()["status"] == "queued"


async def test_a_run_whose_chunks_name_no_repetitions_resumes(
    quiet_lab: Lab,
    fake: FakeOpenAI,
    owner_engine: AsyncEngine,
    runtime: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime.settings, "run_chunk_size", CHUNK_SIZE)
    target = await quiet_lab.openai_model(fake)
    test_set = await quiet_lab.test_set([{"input": f"q{i}"} for i in range(CASES)])
    run = await quiet_lab.run(
        test_set, target, metric_ids=[await quiet_lab.any_answer()], repetitions=2
    )
    async with owner_engine.begin() as connection:
        await connection.execute(
            text("UPDATE jobs SET payload = payload - 'repetitions' WHERE idempotency_key LIKE :k"),
            {"k": f"run:{run['id']}:%"},
        )
    legacy = [payload for _, payload in await _chunk_jobs(owner_engine, run["id"])]
    assert [payload["positions"] for payload in legacy] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 10, 11],
    ]

    await _cancel_and_resume(quiet_lab, run["id"])
    await _cancel_and_resume(quiet_lab, run["id"])

    jobs = await _chunk_jobs(owner_engine, run["id"])
    queued = [payload for status, payload in jobs if status == "queued"]
    assert sorted(queued, key=lambda p: p["positions"]) == legacy
    assert len(jobs) == 3 * len(legacy)  # each resume queued each chunk once
