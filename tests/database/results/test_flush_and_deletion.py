"""A chunk's writer and a deletion of the run's model at the same time: the deletion's SET NULL
waits for the run's row while it holds the model's row, so a flush that then needed the
model's row (a second UPDATE of the run's row in one transaction re-checks its foreign keys)
would deadlock. Driven through the engine's own flush, with the deletion started right after
the writer takes the run's row lock."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from app.engine import executor, writer
from database.core import Database
from database.results import crud
from tests.database.results.conftest import ChunkContext, Lab
from tests.fakes.openai_server import FakeOpenAI, FakeToolCall, FakeToolCalls
from tests.helpers import tenant_session

pytestmark = pytest.mark.slow

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]
MOCKS = [{"name": "lookup", "response": "found"}]
DELETION_WAITING = text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM model_configs%'"
)


def _agent(request: dict[str, Any]) -> str | FakeToolCalls:
    if any(m["role"] == "tool" for m in request["messages"]):
        return "done"
    return FakeToolCalls([FakeToolCall("lookup", {"query": "x"})])


async def _deletion_waits(database: Database, organization_id: uuid.UUID) -> None:
    for _ in range(200):
        async with tenant_session(database, organization_id) as session:
            if await session.scalar(DELETION_WAITING):
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the model's deletion never waited for the run's row")


@pytest.mark.parametrize("kind", ["paid", "agent", "stopped by its budget"])
async def test_a_flush_and_the_runs_model_being_deleted_do_not_deadlock(
    kind: str,
    quiet_lab: Lab,
    fake: FakeOpenAI,
    committed_database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lab, organization = quiet_lab, quiet_lab.account.organization_id
    cases: list[dict[str, Any]] = [{"input": f"question number {i}"} for i in range(4)]
    extra: dict[str, Any] = {"concurrency": 1}
    if kind == "agent":
        fake.reply = _agent
        target = await lab.openai_model(fake, tools=TOOLS)
        cases = [{**case, "tool_responses": MOCKS} for case in cases]
    else:  # 0.3 USD a call (3 tokens at 100,000 USD per million)
        target = await lab.openai_model(fake, input_price_per_mtok=100_000, output_price_per_mtok=0)
        if kind == "stopped by its budget":
            extra["max_cost"] = 0.5
    run = await lab.run(
        await lab.test_set(cases), target, metric_ids=[await lab.any_answer()], **extra
    )
    # No tick: the flushes are the one as the last case starts, the chunk's last, and the one
    # the spent budget calls for. The deletion waits behind the first of them.
    monkeypatch.setattr(writer, "FLUSH_SECONDS", 60.0)

    deleting: list[asyncio.Task[None]] = []
    lock_run = crud.lock_run

    async def delete_model() -> None:
        async with tenant_session(committed_database, organization) as session:
            await session.execute(text("DELETE FROM model_configs WHERE id = :id"), {"id": target})

    async def locked_then_deleted(session: Any, run_id: uuid.UUID) -> Any:
        found = await lock_run(session, run_id)
        if not deleting:  # the writer holds the run's row: the deletion now waits for it
            deleting.append(asyncio.create_task(delete_model()))
            await _deletion_waits(committed_database, organization)
        return found

    monkeypatch.setattr(crud, "lock_run", locked_then_deleted)
    payload = {"run_id": run["id"], "positions": list(range(4)), "repetitions": [0, 1]}
    await executor.run_chunk(ChunkContext(committed_database, organization, payload))
    assert deleting, "the writer never took the run's row lock"
    await asyncio.wait_for(deleting[0], 10)  # a deadlock would have failed one of the two

    done = await lab.get(f"/runs/{run['id']}")
    assert done["target_model_id"] is None
    if kind == "stopped by its budget":
        assert (done["status"], done["counts"]["done"]) == ("stopped", 2)
        assert done["spent"] == pytest.approx(0.6) and "budget reached" in done["error"]
    else:
        assert (done["status"], done["counts"]["done"]) == ("completed", 4)
        assert (done["spent"] > 0) == (kind == "paid")
    async with tenant_session(committed_database, organization) as session:
        seqs = (
            await session.scalars(
                text("SELECT seq FROM run_events WHERE run_id = :id ORDER BY seq"),
                {"id": run["id"]},
            )
        ).all()
        types = (
            await session.scalars(
                text("SELECT type FROM run_events WHERE run_id = :id ORDER BY seq"),
                {"id": run["id"]},
            )
        ).all()
    assert list(seqs) == list(range(1, len(seqs) + 1))
    assert types[0] == "run.started" and types[-1] in ("run.finished",)
    if kind == "agent":
        assert types.count("step.completed") == 8  # two steps a case, before their results
        assert types.index("step.completed") < types.index("result.recorded")
