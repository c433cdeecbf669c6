"""Simulated conversations, end to end: 200 tests whose simulated user (a model) talks to the
target for 4 turns, both answering in a fixed 50 ms, at concurrency 50, through the queue,
the workers, the conversation loop, scoring and PostgreSQL.

Each conversation is 8 model calls one after another (the target answers 4 turns; the
simulated user writes turns 2 to 4, the first being the test's own, and has the last word on
whether its goal was reached), so the ideal wall time is conversations x 8 x latency /
concurrency. Beside it, the floor: the same chains of 7
calls made alone through the engine's HTTP client at the same concurrency."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import httpx

from bench.harness import StolenTime, bench_app, run_workers
from bench.run_throughput import PASSWORD, provider, timed_run
from utils import transport

CONVERSATIONS = 200
TURNS = 4
CALLS = 2 * TURNS  # per conversation, one after another
CONCURRENCY = 50
LATENCY = 0.05
REPEATS = 3


async def _setup(client: httpx.AsyncClient, base_url: str) -> dict[str, Any]:
    registered = await client.post(
        "/api/v1/auth/register",
        json={"email": "talker@example.com", "password": PASSWORD, "name": "Bench"},
    )
    client.headers["Authorization"] = f"Bearer {registered.json()['access_token']}"
    project = (await client.post("/api/v1/projects", json={"name": "talks"})).json()
    tests = [
        {
            "conversation": {
                "simulated": {
                    "persona": "A customer",
                    "goal": f"Sort out order {i}",
                    "first_message": f"Hello, about order {i}",
                    "max_turns": TURNS,
                }
            }
        }
        for i in range(CONVERSATIONS)
    ]
    created = await client.post(
        "/api/v1/tests/bulk", json={"project_id": project["id"], "tests": tests}
    )
    test_set = await client.post(
        "/api/v1/test-sets",
        json={"project_id": project["id"], "name": "talks", "test_ids": created.json()["ids"]},
    )
    metric = await client.post(
        "/api/v1/metrics",
        json={
            "project_id": project["id"],
            "name": "answers",
            "type": "word-count",
            "parameters": {"min": 1},
        },
    )
    models = []
    for name in ("target", "simulated user"):
        model = await client.post(
            "/api/v1/models",
            json={
                "name": name,
                "provider": "openai-compatible",
                "model": "bench-model",
                "base_url": base_url,
                "api_key": "sk-bench",
            },
        )
        models.append(model.json()["id"])
    return {
        "organization": registered.json()["organization"]["id"],
        "test_set": test_set.json()["id"],
        "metric": metric.json()["id"],
        "target": models[0],
        "simulator": models[1],
    }


async def _timed_run(client: httpx.AsyncClient, setup: dict[str, Any]) -> float:
    body = {
        "test_set_id": setup["test_set"],
        "target_model_id": setup["target"],
        "simulator_model_id": setup["simulator"],
        "metric_ids": [setup["metric"]],
        "concurrency": CONCURRENCY,
    }
    elapsed, current = await timed_run(client, setup["organization"], body)
    assert current["counts"]["passed"] == CONVERSATIONS, current["counts"]
    results = await client.get(f"/api/v1/runs/{current['id']}/results", params={"limit": 1})
    assert len(results.json()["items"][0]["trajectory"]) == TURNS
    return elapsed


async def _bare_chains(base_url: str) -> float:
    """The floor: the same chains of calls alone, at the same concurrency."""
    body = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "x"}]})
    headers = {"Content-Type": "application/json"}
    queued = iter(range(CONVERSATIONS))

    async def lane() -> None:
        for _ in queued:
            for _ in range(CALLS):
                await transport.send(
                    "POST", f"{base_url}/chat/completions", body=body, headers=headers, seconds=30
                )

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started


async def run() -> None:
    async with (
        bench_app(
            bcrypt_rounds=4, allow_private_networks=True, workers=2, max_run_concurrency=CONCURRENCY
        ) as client,
        run_workers(),
        provider(LATENCY) as slow,
    ):
        stolen = StolenTime()
        setup = await _setup(client, slow)
        await _timed_run(client, setup)  # warm-up
        runs, floors = [], []
        for _ in range(REPEATS):
            with stolen.measure():
                runs.append(await _timed_run(client, setup))
            floors.append(await _bare_chains(slow))
    ideal = CONVERSATIONS * CALLS * LATENCY / CONCURRENCY
    ratios = sorted(seconds / ideal for seconds in runs)
    floor_ratios = sorted(seconds / ideal for seconds in floors)
    over_floor = sorted(a / f for a, f in zip(runs, floors, strict=True))
    print(
        f"simulated conversations ({CONVERSATIONS} x {TURNS} turns, a simulated user, 50 ms"
        f" provider, concurrency {CONCURRENCY}; median of {REPEATS} runs, range in brackets)"
    )
    print(
        f"  {statistics.median(ratios):.2f}x the ideal {ideal:.2f} s"
        f" ({CALLS} calls per conversation)  [{ratios[0]:.2f}-{ratios[-1]:.2f}]  (goal <= 1.3x)"
    )
    print(
        f"      baseline, the same chains of calls alone: {statistics.median(floor_ratios):.2f}x"
        f" the ideal  [{floor_ratios[0]:.2f}-{floor_ratios[-1]:.2f}]; a run takes"
        f" {statistics.median(over_floor):.2f}x its baseline"
        f"  [{over_floor[0]:.2f}-{over_floor[-1]:.2f}]"
    )
    if stolen.share is not None:
        print(f"      CPU time the hypervisor gave other guests meanwhile: {stolen.share:.0%}")
