"""Run throughput, end to end: POST /runs -> job queue -> workers -> provider -> scored
results in PostgreSQL -> run completed. 1,000 cases, two deterministic metrics.

(a) a provider answering in a fixed 50 ms, concurrency 50: wall time against the ideal
    (cases x latency / concurrency);
(b) an instant provider: cases per second.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from bench.harness import StolenTime, bench_app, run_workers
from database.core import Database, Tenant, get_database
from utils import transport

CASES = 1000
CONCURRENCY = 50
LATENCY = 0.05
REPEATS = 5
PASSWORD = "bench-password-1"
TERMINAL = ("completed", "failed", "cancelled")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def provider(latency: float) -> AsyncIterator[str]:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.fake_provider", "--port", str(port), "--latency", str(latency)
    )
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(100):
                try:
                    await client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={})
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def _setup(client: httpx.AsyncClient) -> dict[str, Any]:
    registered = await client.post(
        "/api/v1/auth/register",
        json={"email": "runner@example.com", "password": PASSWORD, "name": "Bench"},
    )
    client.headers["Authorization"] = f"Bearer {registered.json()['access_token']}"
    project = (await client.post("/api/v1/projects", json={"name": "bench"})).json()
    ids: list[str] = []
    for start in range(0, CASES, 1000):
        cases = [
            {"input": f"case {i}", "expected_output": f"case {i}"}
            for i in range(start, min(CASES, start + 1000))
        ]
        created = await client.post(
            "/api/v1/tests/bulk", json={"project_id": project["id"], "tests": cases}
        )
        ids += created.json()["ids"]
    test_set = await client.post(
        "/api/v1/test-sets", json={"project_id": project["id"], "name": "bench", "test_ids": ids}
    )
    metrics = []
    for body in (
        {"name": "contains", "type": "contains"},
        {"name": "short", "type": "word-count", "parameters": {"max": 10}},
    ):
        created = await client.post("/api/v1/metrics", json={"project_id": project["id"], **body})
        metrics.append(created.json()["id"])
    return {
        "organization": registered.json()["organization"]["id"],
        "project": project["id"],
        "test_set": test_set.json()["id"],
        "metrics": metrics,
    }


@asynccontextmanager
async def status_reader(organization_id: str) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """Reads a run's status on a driver connection of its own, in a transaction of the run's
    organization: polling through the API (or the ORM) every few milliseconds would itself take
    a share of the CPU being measured."""
    url = get_database().engine.url.render_as_string(hide_password=False)
    reader = Database.connect(url, pool_size=1, max_overflow=0)  # not one of the app's
    try:
        async with reader.transaction(Tenant(uuid.UUID(organization_id))) as session:
            raw = await (await session.connection()).get_raw_connection()
            connection = raw.driver_connection
            assert connection is not None

            async def status(run_id: str) -> str:
                return await connection.fetchval(
                    "SELECT status FROM runs WHERE id = $1", uuid.UUID(run_id)
                )

            yield status
    finally:
        await reader.dispose()


async def _bare_calls(base_url: str) -> float:
    """The floor, same provider, same moment: the 1,000 chat completions alone through the
    engine's own HTTP transport at the same concurrency (no queue, no scoring, no database)."""
    body = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "x"}]})
    headers = {"Content-Type": "application/json"}
    queued = iter(range(CASES))

    async def lane() -> None:
        for _ in queued:
            _, _, raw = await transport.send(
                "POST", f"{base_url}/chat/completions", body=body, headers=headers, seconds=30
            )
            json.loads(raw)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started


async def timed_run(
    client: httpx.AsyncClient, organization_id: str, body: dict[str, Any]
) -> tuple[float, dict[str, Any]]:
    """POST /runs with `body`, then wait for its end (read apart from the API, see
    status_reader): the seconds it took and the run as it ended, completed."""
    started = time.perf_counter()
    run = await client.post("/api/v1/runs", json=body)
    run_id = run.json()["id"]
    async with status_reader(organization_id) as status:
        while await status(run_id) not in TERMINAL:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    current = (await client.get(f"/api/v1/runs/{run_id}")).json()
    assert current["status"] == "completed", current
    return elapsed, dict(current)


async def _timed_run(
    client: httpx.AsyncClient, setup: dict[str, Any], base_url: str, name: str
) -> float:
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
    body = {
        "test_set_id": setup["test_set"],
        "target_model_id": model.json()["id"],
        "metric_ids": setup["metrics"],
        "concurrency": CONCURRENCY,
    }
    elapsed, current = await timed_run(client, setup["organization"], body)
    assert current["counts"]["done"] == CASES, current["counts"]
    assert current["counts"]["errored"] == 0, current["counts"]
    return elapsed


async def run() -> None:
    async with (
        bench_app(
            bcrypt_rounds=4, allow_private_networks=True, workers=2, max_run_concurrency=CONCURRENCY
        ) as client,
        run_workers(),
    ):
        stolen = StolenTime()
        setup = await _setup(client)
        async with provider(LATENCY) as slow:
            await _timed_run(client, setup, slow, "warm-up")
            await _bare_calls(slow)
            # Each run is paired with a floor run right after it, so that both see the
            # machine in the same mood.
            slow_runs, floor_runs = [], []
            for i in range(REPEATS):
                with stolen.measure():
                    slow_runs.append(await _timed_run(client, setup, slow, f"slow {i}"))
                floor_runs.append(await _bare_calls(slow))
        async with provider(0.0) as instant:
            instant_runs = [
                await _timed_run(client, setup, instant, f"instant {i}") for i in range(REPEATS)
            ]
    ideal = CASES * LATENCY / CONCURRENCY
    slow_ratios = sorted(seconds / ideal for seconds in slow_runs)
    floor_ratios = sorted(seconds / ideal for seconds in floor_runs)
    over_floor = sorted(a / f for a, f in zip(slow_runs, floor_runs, strict=True))
    rates = sorted(CASES / seconds for seconds in instant_runs)
    print(
        f"run throughput ({CASES} cases, 2 metrics, concurrency {CONCURRENCY}, app + database;"
        f" median of {REPEATS} runs, range in brackets)"
    )
    print(
        f"  (a) 50 ms provider: {statistics.median(slow_ratios):.2f}x the ideal {ideal:.2f} s"
        f"  [{slow_ratios[0]:.2f}-{slow_ratios[-1]:.2f}]  (goal <= 1.5x)"
    )
    print(
        "      baseline, the same calls alone right after each run (the engine's HTTP client,"
        f" no queue, no database): {statistics.median(floor_ratios):.2f}x the ideal"
        f"  [{floor_ratios[0]:.2f}-{floor_ratios[-1]:.2f}];"
        f" a run takes {statistics.median(over_floor):.2f}x its baseline"
        f"  [{over_floor[0]:.2f}-{over_floor[-1]:.2f}]"
    )
    if stolen.share is not None:
        print(
            f"      CPU time the hypervisor gave other guests during the (a) runs:"
            f" {stolen.share:.0%} of this machine's"
        )
    print(
        f"  (b) instant provider: {statistics.median(rates):.0f} cases/s"
        f"  [{rates[0]:.0f}-{rates[-1]:.0f}]  (goal >= 500)"
    )
