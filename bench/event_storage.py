"""A run's event log against its results: the disk a run's `run_events` rows take, over what its
results and evaluations take (goal: at most 0.25).

Each case writes 2,000 results (1,000 cases x 2 repetitions, 2 metrics) through the engine's own
write path (`execution.record_batch`, in batches of the writer's size), so the events are the
ones a real run records. Sizes are the growth of each table while the run is written, on a
database holding nothing else: heap, TOAST and indexes (`pg_total_relation_size`); the row
bytes (`pg_column_size`) are printed beside them.

Texts are words drawn from a vocabulary of 4,000 made-up words (about as compressible as prose
to pglz). Inputs are 50-400 characters; the `contains` metric gives a short reason, the judge
(`answer-relevance`) 100-600 characters with its tokens and cost. Outputs, uniformly:
- long: 200-3,000 characters (a chat answer, a summary);
- short: 20-200 characters (a label, a one-line answer).
"""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text

from app.engine.writer import FLUSH_ROWS
from bench.harness import api_post, bench_app
from database.core import Tenant, get_database
from database.results import crud, execution
from database.results.models import Run
from utils.ids import new_id

CASES, REPETITIONS = 1_000, 2
OUTPUTS = {"long": (200, 3_000), "short": (20, 200)}  # characters, uniformly
GOAL = 0.25
PASSWORD = "bench-password-1"
TABLES = ("run_events", "results", "evaluations")

_SIZES = text("SELECT " + ", ".join(f"pg_total_relation_size('{table}')" for table in TABLES))
_ROW_BYTES = text("""
SELECT (SELECT coalesce(sum(pg_column_size(e.*)), 0) FROM run_events e WHERE e.run_id = :run),
       (SELECT coalesce(sum(pg_column_size(r.*)), 0) FROM results r WHERE r.run_id = :run),
       (SELECT coalesce(sum(pg_column_size(v.*)), 0) FROM evaluations v WHERE v.run_id = :run),
       (SELECT count(*) FROM run_events e WHERE e.run_id = :run),
       (SELECT avg(pg_column_size(e.data)) FROM run_events e
        WHERE e.run_id = :run AND e.type = 'result.recorded')
""")


@dataclass
class Storage:
    events: int  # bytes the run added to run_events (heap, TOAST, indexes)
    results: int  # to results and evaluations
    event_rows: int  # the rows' own bytes, as stored (compressed where PostgreSQL compressed)
    result_rows: int
    event_count: int
    event_data: float  # the average `data` of a result.recorded event, bytes

    @property
    def ratio(self) -> float:
        return self.events / self.results


class Texts:
    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        letters = string.ascii_lowercase
        self.words = [
            "".join(self.random.choices(letters, k=self.random.randint(2, 10))) for _ in range(4000)
        ]

    def of(self, low: int, high: int) -> str:
        wanted = self.random.randint(low, high)
        words: list[str] = []
        length = 0
        while length < wanted:
            word = self.random.choice(self.words)
            words.append(word)
            length += len(word) + 1
        return " ".join(words)[:wanted]


async def _setup(client: httpx.AsyncClient) -> dict[str, Any]:
    registered = await api_post(
        client,
        "/auth/register",
        {"email": "events@example.com", "password": PASSWORD, "name": "Bench"},
    )
    client.headers["Authorization"] = f"Bearer {registered['access_token']}"
    project = (await api_post(client, "/projects", {"name": "events"}))["id"]
    ids: list[str] = []
    for start in range(0, CASES, 1000):
        tests = [{"input": f"question {i}"} for i in range(start, min(CASES, start + 1000))]
        ids += (await api_post(client, "/tests/bulk", {"project_id": project, "tests": tests}))[
            "ids"
        ]
    test_set = await api_post(
        client, "/test-sets", {"project_id": project, "name": "e", "test_ids": ids}
    )
    model = await api_post(client, "/models", {"name": "demo", "provider": "demo"})
    judged = {"type": "answer-relevance", "judge_model_id": model["id"]}
    metrics = [
        (await api_post(client, "/metrics", {"project_id": project, "name": name, **body}))["id"]
        for name, body in (("contains", {"type": "contains"}), ("relevance", judged))
    ]
    return {
        "organization": uuid.UUID(registered["organization"]["id"]),
        "body": {
            "test_set_id": test_set["id"],
            "target_model_id": model["id"],
            "metric_ids": metrics,
            "repetitions": REPETITIONS,
        },
        "tests": [uuid.UUID(i) for i in ids],
    }


def _case(
    run: Run, texts: Texts, test_id: uuid.UUID, key: tuple[int, int], output: tuple[int, int]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A result with its two evaluations, as app/engine/case.py builds them."""
    passed = texts.random.random() < 0.8
    result = {
        "id": new_id(),
        "organization_id": run.organization_id,
        "run_id": run.id,
        "position": key[0],
        "repetition": key[1],
        "test_id": test_id,
        "input": {"text": texts.of(50, 400)},
        "output": texts.of(*output),
        "status": "passed" if passed else "failed",
        "latency_ms": round(texts.random.uniform(200, 4000), 2),
        "input_tokens": texts.random.randint(20, 200),
        "output_tokens": texts.random.randint(10, 800),
        "cost": round(texts.random.uniform(0.00001, 0.002), 6),
        "cached": False,
        "error_type": None,
        "error_message": None,
        "trajectory": None,
    }
    evaluations = []
    for metric in run.metrics:
        judged = metric["type"] != "contains"
        evaluations.append(
            {
                "id": new_id(),
                "organization_id": run.organization_id,
                "run_id": run.id,
                "metric_id": uuid.UUID(metric["id"]) if metric.get("id") else None,
                "metric_name": metric["name"],
                "metric_type": metric["type"],
                "score": round(texts.random.random(), 3) if judged else float(passed),
                "passed": passed,
                "reason": texts.of(100, 600) if judged else f"contains {texts.of(5, 30)!r}",
                "error": None,
                "input_tokens": texts.random.randint(300, 1500) if judged else None,
                "output_tokens": texts.random.randint(50, 300) if judged else None,
                "cost": round(texts.random.uniform(0.0001, 0.001), 6) if judged else None,
            }
        )
    return result, evaluations


async def _measure(
    client: httpx.AsyncClient, setup: dict[str, Any], output: tuple[int, int]
) -> Storage:
    created = await client.post("/api/v1/runs", json=setup["body"])  # no worker runs it
    assert created.status_code in (201, 202), created.text
    run_id = uuid.UUID(created.json()["id"])
    tenant = Tenant(setup["organization"])
    database = get_database()
    texts = Texts(seed=output[1])
    async with database.transaction(tenant) as session:
        before = (await session.execute(_SIZES)).one()
    keys = [(p, r) for r in range(REPETITIONS) for p in range(CASES)]
    for start in range(0, len(keys), FLUSH_ROWS):
        async with database.transaction(tenant) as session:
            run = await crud.get_run(session, run_id)
            assert run is not None
            if start == 0:
                await execution.start_chunk(session, run)
            batch = [
                _case(run, texts, setup["tests"][key[0]], key, output)
                for key in keys[start : start + FLUSH_ROWS]
            ]
            await execution.record_batch(session, run, batch)
    async with database.transaction(tenant) as session:
        after = (await session.execute(_SIZES)).one()
        rows = (await session.execute(_ROW_BYTES, {"run": run_id})).one()
    grown = [a - b for a, b in zip(after, before, strict=True)]
    return Storage(
        events=grown[0],
        results=grown[1] + grown[2],
        event_rows=int(rows[0]),
        result_rows=int(rows[1]) + int(rows[2]),
        event_count=int(rows[3]),
        event_data=float(rows[4] or 0),
    )


async def run() -> None:
    found: dict[str, Storage] = {}
    async with bench_app(bcrypt_rounds=4) as client:
        setup = await _setup(client)
        for label, output in OUTPUTS.items():
            found[label] = await _measure(client, setup, output)
    results = CASES * REPETITIONS
    print(
        f"event log storage ({results:,} results of {CASES:,} cases x {REPETITIONS}"
        f" repetitions, 2 metrics; written through the engine's write path)"
    )
    for label, storage in found.items():
        low, high = OUTPUTS[label]
        print(
            f"  {label} outputs ({low:,}-{high:,} chars): run_events +{storage.events / 1e6:.2f} MB"
            f" ({storage.event_count:,} events) vs results + evaluations"
            f" +{storage.results / 1e6:.2f} MB: ratio {storage.ratio:.3f} (goal <= {GOAL})"
        )
        print(
            f"    rows alone: {storage.event_rows / 1e6:.2f} MB vs {storage.result_rows / 1e6:.2f}"
            f" MB ({storage.event_rows / storage.result_rows:.2f});"
            f" a result.recorded event's data {storage.event_data:.0f} bytes on average"
        )


if __name__ == "__main__":
    import asyncio

    asyncio.run(run())
