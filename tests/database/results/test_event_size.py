"""A result's event is stored as a small, fixed-size reference to its result however long the
output and the judges' reasons, and read as a preview flagged as cut, a short reason where a
metric did not pass, the whole text kept in the result. A real run writes it (workers, a fake
provider and a fake judge over HTTP)."""

from __future__ import annotations

import json
import random
import string
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from database.core import Database
from database.results import events
from database.results.event_payloads import ResultRecorded
from database.results.events import OUTPUT_PREVIEW_CHARS, REASON_CHARS
from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import tenant_session


def _words(seed: int, count: int) -> str:
    """Text PostgreSQL can hardly compress (so sizes are those of the characters kept)."""
    chosen = random.Random(seed)
    return " ".join("".join(chosen.choices(string.ascii_lowercase, k=7)) for _ in range(count))


OUTPUT = _words(1, 2_000)  # 16,000 characters
REASON = _words(2, 375)  # 3,000 (a judge's answer holds at most 4,000)
# One stored row of run_events, as PostgreSQL stores it: its keys, its type and the result's id,
# whatever the lengths of the output and the reasons.
MAX_EVENT_BYTES = 200


@dataclass
class Recorded:
    stored: dict[str, Any]  # what the run_events row holds
    data: dict[str, Any]  # the event as streams send it
    row_bytes: int  # the run_events row
    result_bytes: int  # the result's row and its evaluations' rows
    result: dict[str, Any]  # GET /results/{id}


async def _long_case(lab: Lab, fake: FakeOpenAI, database: Database) -> Recorded:
    """One case: a long output, a check that passes and two judges that fail it at length."""
    fake.reply = lambda body: OUTPUT
    with FakeOpenAI(require_api_key="sk-test") as judge_server:
        judge_server.reply = lambda body: json.dumps({"score": 0.1, "reason": REASON})
        target = await lab.openai_model(fake)
        judge = await lab.openai_model(judge_server)
        test_set = await lab.test_set([{"input": "say a lot", "expected_output": OUTPUT[-7:]}])
        metrics = [await lab.metric("contains")]
        metrics += [await lab.metric("answer-relevance", judge_model_id=judge) for _ in range(2)]
        run = await lab.run(test_set, target, metric_ids=metrics)
        done = await lab.wait(run["id"])
    assert done["counts"]["failed"] == 1, done["counts"]
    [listed] = await lab.results(run["id"])
    async with tenant_session(database, lab.account.organization_id) as session:
        event = (
            await session.execute(
                text(
                    "SELECT data, pg_column_size(e.*) FROM run_events e"
                    " WHERE run_id = :run AND type = 'result.recorded'"
                ),
                {"run": run["id"]},
            )
        ).one()
        [read] = [
            e
            for e in await events.read_after(session, uuid.UUID(run["id"]), 0, limit=100)
            if e.type == "result.recorded"
        ]
        result_bytes = await session.scalar(
            text(
                "SELECT (SELECT pg_column_size(r.*) FROM results r WHERE r.id = :id)"
                " + (SELECT sum(pg_column_size(v.*)) FROM evaluations v WHERE v.result_id = :id)"
            ),
            {"id": listed["id"]},
        )
    return Recorded(
        stored=event[0],
        data=read.data,
        row_bytes=event[1],
        result_bytes=int(result_bytes),
        result=await lab.get(f"/results/{listed['id']}"),
    )


async def test_a_long_output_is_previewed_in_its_event_and_whole_in_its_result(
    lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    recorded = await _long_case(lab, fake, committed_database)
    data = recorded.data
    ResultRecorded.model_validate(data)  # as /public/openapi.json documents it
    assert data["result_id"] == recorded.result["id"]
    assert recorded.stored == {"result_id": recorded.result["id"]}
    assert data["status"] == "failed"
    assert data["output"] == OUTPUT[:OUTPUT_PREVIEW_CHARS]
    assert data["output_truncated"] is True
    assert recorded.result["output"] == OUTPUT  # the result keeps all of it

    by_metric = {e["metric"]: e for e in data["evaluations"]}
    assert len(by_metric) == 3
    passing = [e for e in data["evaluations"] if e["passed"]]
    failing = [e for e in data["evaluations"] if not e["passed"]]
    assert [set(e) for e in passing] == [{"metric", "score", "passed"}]  # no reason to show
    assert [e["reason"] for e in failing] == [REASON[:REASON_CHARS]] * 2
    assert all(e["score"] == 0.1 for e in failing)
    whole = [e["reason"] for e in recorded.result["evaluations"] if not e["passed"]]
    assert whole == [REASON] * 2  # every reason, whole, in the result's evaluations
    # Unset optional keys are not stored.
    assert not {"cached", "error_type", "error_message"} & set(data)


async def test_a_result_event_stays_small_for_a_long_output_with_long_reasons(
    lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    recorded = await _long_case(lab, fake, committed_database)
    assert recorded.row_bytes <= MAX_EVENT_BYTES, recorded.row_bytes
    assert recorded.row_bytes * 4 <= recorded.result_bytes, (recorded.row_bytes, recorded)


def test_a_steps_event_stays_small_however_many_and_long_its_tool_calls():
    """128 calls of 4,000-character arguments, answers, ids and names made one event of about
    ten megabytes (and a stream replays hundreds at once): the calls' texts share one budget,
    ids and names are cut."""
    long = "é" * 100_000
    step = {
        "step": 1,
        "text": "thinking",
        "tool_calls": [{"id": long, "name": long, "arguments": {"q": long}}] * 128,
        "tool_results": [{"id": long, "name": long, "content": long}] * 128,
        "latency_ms": 1.0,
    }
    _, data = events.step_completed(0, 1, step)
    encoded = json.dumps(data, ensure_ascii=False)
    names = 2 * 128 * 2 * events.NAME_CHARS
    assert len(encoded) < events.CALLS_PREVIEW_CHARS + names + 128 * 2 * 60 + 1_000
    calls, results = data["tool_calls"], data["tool_results"]
    assert len(calls[0]["arguments"]) == events.PREVIEW_CHARS  # the first ones whole...
    assert calls[-1]["arguments"] == results[-1]["content"] == ""  # ...the last ones empty
    assert {len(call["id"]) for call in calls} == {events.NAME_CHARS}
    # Short arguments stay as decoded.
    short = {**step, "tool_calls": [{"id": "c1", "name": "f", "arguments": {"q": 1}}]}
    assert events.step_completed(0, 1, short)[1]["tool_calls"][0]["arguments"] == {"q": 1}
