"""A rescore scores the results its source had when it was made, which its total counts: a
source resumed meanwhile gains results the rescore's chunks leave alone, so that its count
reaches its total only once every chunk of its own is in."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from app.engine import executor
from database.core import Database
from database.results import crud, follow_ups
from database.results.schemas import RescoreCreate
from tasks import queue
from tests.database.results.conftest import ChunkContext, Lab
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import tenant_session
from utils.auth import Principal, Role
from utils.errors import Conflict

CASES = 6
REPETITIONS = 2
CUT = 4  # the source is cancelled before the second repetition of its first CUT cases


async def _chunks(database: Database, lab: Lab, run_id: str) -> list[dict[str, Any]]:
    async with tenant_session(database, lab.account.organization_id) as session:
        planned = await queue.payloads(session, "run.chunk", f"run:{run_id}:")
    return [payload for _, payload in planned]


async def _run(database: Database, lab: Lab, payload: dict[str, Any]) -> None:
    await executor.run_chunk(ChunkContext(database, lab.account.organization_id, payload))


async def _keys(lab: Lab, run_id: str) -> list[tuple[int, int]]:
    return sorted((r["position"], r["repetition"]) for r in await lab.results(run_id))


async def test_a_rescore_leaves_what_its_resumed_source_gained_since(
    quiet_lab: Lab, fake: FakeOpenAI, committed_database: Database, runtime, monkeypatch
):
    lab = quiet_lab
    target = await lab.openai_model(fake)
    metric = await lab.any_answer()
    test_set = await lab.test_set([{"input": f"q{i}"} for i in range(CASES)])
    source = (await lab.run(test_set, target, metric_ids=[metric], repetitions=REPETITIONS))["id"]
    for payload in await _chunks(committed_database, lab, source):
        await _run(committed_database, lab, payload)
    assert (await lab.get(f"/runs/{source}"))["status"] == "completed"
    async with tenant_session(committed_database, lab.account.organization_id) as session:
        await session.execute(
            text("DELETE FROM results WHERE run_id = :id AND position < :cut AND repetition = 1"),
            {"id": uuid.UUID(source), "cut": CUT},
        )
        await session.execute(
            text("UPDATE runs SET status = 'cancelled' WHERE id = :id"), {"id": uuid.UUID(source)}
        )
    had = await _keys(lab, source)

    # Two cases to a chunk: (0, 1), (2, 3) and (4, 5), both repetitions.
    monkeypatch.setattr(runtime.settings, "run_chunk_size", 2 * REPETITIONS)
    rescore = (await lab.post(f"/runs/{source}/rescore", {"metric_ids": [metric]}, 202)).json()
    assert rescore["counts"]["total"] == len(had) == CASES * REPETITIONS - CUT
    chunks = {
        tuple(p["positions"]): p for p in await _chunks(committed_database, lab, rescore["id"])
    }
    assert sorted(chunks) == [(0, 1), (2, 3), (4, 5)]

    # The source is resumed (reopened, then its chunk does what it lacks) before the rescore's
    # chunks run.
    async with tenant_session(committed_database, lab.account.organization_id) as session:
        await session.execute(
            text("UPDATE runs SET status = 'queued' WHERE id = :id"), {"id": uuid.UUID(source)}
        )
    for payload in await _chunks(committed_database, lab, source):
        await _run(committed_database, lab, payload)
    assert len(await _keys(lab, source)) == CASES * REPETITIONS

    # The chunks whose cases the source gained results for come first: each scores only what
    # the source had, so the run stays open for the last one.
    for positions in ((2, 3), (0, 1)):
        await _run(committed_database, lab, chunks[positions])
    opened = await lab.get(f"/runs/{rescore['id']}")
    assert opened["status"] == "running", opened
    assert opened["counts"]["done"] == 4
    await _run(committed_database, lab, chunks[(4, 5)])
    ended = await lab.get(f"/runs/{rescore['id']}")
    assert ended["status"] == "completed", ended
    assert await _keys(lab, rescore["id"]) == had


async def test_a_rescore_reads_its_source_as_it_stands_under_its_lock(
    quiet_lab: Lab, fake: FakeOpenAI, committed_database: Database
):
    """The request read its source as ended; a resume reopened it since: the rescore, made
    with the source's row held still, sees that and is refused, rather than count results a
    reopened source goes on writing (which its chunks, reading them as of its making, would
    never score: the run would never end)."""
    lab = quiet_lab
    metric = await lab.any_answer()
    test_set = await lab.test_set([{"input": f"q{i}"} for i in range(2)])
    source = (await lab.run(test_set, await lab.openai_model(fake), metric_ids=[metric]))["id"]
    for payload in await _chunks(committed_database, lab, source):
        await _run(committed_database, lab, payload)
    organization = lab.account.organization_id
    async with tenant_session(committed_database, organization) as session:
        read = await crud.get_run(session, uuid.UUID(source))
    assert read is not None and read.status == "completed"
    async with tenant_session(committed_database, organization) as session:
        await crud.reopen(session, read.id, repetitions=2, total=4, max_cost=None)

    principal = Principal(
        organization_id=organization, role=Role.owner, user_id=lab.account.user_id
    )
    body = RescoreCreate(metric_ids=[uuid.UUID(metric)])
    with pytest.raises(Conflict, match="queued"):
        async with tenant_session(committed_database, organization) as session:
            await follow_ups.rescore(session, principal, read, body)
