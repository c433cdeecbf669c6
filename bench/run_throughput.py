"""Run throughput, end to end: POST /runs -> job queue -> workers -> provider -> scored
results in PostgreSQL -> run completed. Two deterministic metrics, concurrency 50.

(a) 1,000 cases, a provider answering in a fixed 50 ms: wall time against the ideal
    (cases x latency / concurrency), and against the same calls made alone right after;
(b) 1,000 cases, an instant provider: cases per second, against the same calls made alone
    through the engine's provider client (app.engine.calls.call_model) right after;
(c), 100,000 cases on a server process of its own, is bench.run_at_scale.
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from app.engine.calls import call_model
from bench.harness import StolenTime, api_post, bench_app, free_port, run_workers
from database.core import Database, Tenant, get_database
from providers.targets import TargetConfig, TargetRequest
from utils import transport

CASES = 1000
CONCURRENCY = 50
LATENCY = 0.05
REPEATS = 5
PASSWORD = "bench-password-1"
TERMINAL = ("completed", "failed", "cancelled")


@asynccontextmanager
async def provider(latency: float) -> AsyncIterator[str]:
    port = free_port()
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
    registered = await api_post(
        client,
        "/auth/register",
        {"email": "runner@example.com", "password": PASSWORD, "name": "Bench"},
    )
    client.headers["Authorization"] = f"Bearer {registered['access_token']}"
    project = await api_post(client, "/projects", {"name": "bench"})
    cases = [{"input": f"case {i}", "expected_output": f"case {i}"} for i in range(CASES)]
    ids = (await api_post(client, "/tests/bulk", {"project_id": project["id"], "tests": cases}))[
        "ids"
    ]
    test_set = await api_post(
        client, "/test-sets", {"project_id": project["id"], "name": "bench", "test_ids": ids}
    )
    metrics = []
    for body in (
        {"name": "contains", "type": "contains"},
        {"name": "short", "type": "word-count", "parameters": {"max": 10}},
    ):
        metrics.append(
            (await api_post(client, "/metrics", {"project_id": project["id"], **body}))["id"]
        )
    return {
        "organization": registered["organization"]["id"],
        "project": project["id"],
        "test_set": test_set["id"],
        "metrics": metrics,
    }


@asynccontextmanager
async def tenant_connection(organization_id: str, url: str | None = None) -> AsyncIterator[Any]:
    """A driver connection of its own (not one of the app's), in a transaction of the
    organization: polling through the API (or the ORM) every few milliseconds would itself
    take a share of the CPU being measured."""
    url = url or get_database().engine.url.render_as_string(hide_password=False)
    reader = Database.connect(url, pool_size=1, max_overflow=0)
    try:
        async with reader.transaction(Tenant(uuid.UUID(organization_id))) as session:
            raw = await (await session.connection()).get_raw_connection()
            connection = raw.driver_connection
            assert connection is not None
            yield connection
    finally:
        await reader.dispose()


async def _lanes(call: Callable[[int], Awaitable[object]]) -> float:
    """Seconds for CASES calls of `call` made by CONCURRENCY lanes, as the executor makes them."""
    queued = iter(range(CASES))

    async def lane() -> None:
        for i in queued:
            await call(i)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started


async def _bare_calls(base_url: str) -> float:
    """(a)'s floor, same provider, same moment: the chat completions alone through the engine's
    own HTTP transport (no queue, no scoring, no database)."""
    body = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "x"}]})
    headers = {"Content-Type": "application/json"}

    async def call(_case: int) -> None:
        _status, _headers, raw = await transport.send(
            "POST", f"{base_url}/chat/completions", body=body, headers=headers, seconds=30
        )
        json.loads(raw)

    return await _lanes(call)


async def _client_calls(base_url: str) -> float:
    """(b)'s floor: the same calls through the engine's provider client, as a run makes each
    one (the model's gate, retries, metrics, the wire format), with no queue and no database."""
    config = TargetConfig(
        id=uuid.uuid4(),
        name="floor",
        provider="openai-compatible",
        model="bench-model",
        base_url=base_url,
        api_key="sk-bench",
        parameters={},
        timeout_seconds=60.0,
        requests_per_minute=None,
        input_price_per_mtok=None,
        output_price_per_mtok=None,
    )

    async def call(i: int) -> None:
        await call_model(config, TargetRequest(input=f"case {i}"), allow_private=True)

    return await _lanes(call)


async def timed_run(
    client: httpx.AsyncClient,
    organization_id: str,
    body: dict[str, Any],
    url: str | None = None,
    posted: Callable[[], None] | None = None,
) -> tuple[float, dict[str, Any]]:
    """POST /runs with `body` (then `posted()`), then wait for its end (read apart from the
    API, see tenant_connection): the seconds it took and the run as it ended, completed."""
    started = time.perf_counter()
    run_id = (await api_post(client, "/runs", body))["id"]
    if posted is not None:
        posted()
    async with tenant_connection(organization_id, url) as connection:
        status = "SELECT status FROM runs WHERE id = $1"
        while await connection.fetchval(status, uuid.UUID(run_id)) not in TERMINAL:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    current = (await client.get(f"/api/v1/runs/{run_id}")).json()
    assert current["status"] == "completed", current
    return elapsed, dict(current)


async def _run_on(
    client: httpx.AsyncClient, setup: dict[str, Any], base_url: str, name: str, **options: Any
) -> tuple[float, dict[str, Any]]:
    model = await api_post(
        client,
        "/models",
        {
            "name": name,
            "provider": "openai-compatible",
            "model": "bench-model",
            "base_url": base_url,
            "api_key": "sk-bench",
        },
    )
    body = {
        "test_set_id": setup["test_set"],
        "target_model_id": model["id"],
        "metric_ids": setup["metrics"],
        "concurrency": CONCURRENCY,
    }
    elapsed, current = await timed_run(client, setup["organization"], body, **options)
    assert current["counts"]["done"] == current["counts"]["total"], current["counts"]
    assert current["counts"]["errored"] == 0, current["counts"]
    return elapsed, current


def _cpu() -> float:
    """This process's CPU seconds so far (every thread, user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _spread(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{statistics.median(ordered):.2f}x  [{ordered[0]:.2f}-{ordered[-1]:.2f}]"


async def run() -> None:
    stolen = StolenTime()
    async with (
        bench_app(
            bcrypt_rounds=4, allow_private_networks=True, workers=2, max_run_concurrency=CONCURRENCY
        ) as client,
        run_workers(),
    ):
        setup = await _setup(client)
        # Each run is paired with its floor right after it, so that both see the machine in
        # the same mood.
        async with provider(LATENCY) as slow:
            await _run_on(client, setup, slow, "warm-up")
            await _bare_calls(slow)
            slow_runs, floor_runs = [], []
            for i in range(REPEATS):
                with stolen.measure():
                    slow_runs.append((await _run_on(client, setup, slow, f"slow {i}"))[0])
                    floor_runs.append(await _bare_calls(slow))
        async with provider(0.0) as instant:
            await _client_calls(instant)
            instant_runs, client_runs, cpu = [], [], []
            for i in range(REPEATS):
                with stolen.measure():
                    used = _cpu()
                    instant_runs.append((await _run_on(client, setup, instant, f"instant {i}"))[0])
                    used, between = _cpu() - used, _cpu()
                    client_runs.append(await _client_calls(instant))
                    cpu.append((used, _cpu() - between))

    ideal = CASES * LATENCY / CONCURRENCY
    rates = sorted(CASES / seconds for seconds in instant_runs)
    floor_rates = sorted(CASES / seconds for seconds in client_runs)
    print(
        f"run throughput ({CASES} cases, 2 metrics, concurrency {CONCURRENCY}, app + database;"
        f" median of {REPEATS} runs, range in brackets)"
    )
    print(
        f"  (a) 50 ms provider: {_spread([s / ideal for s in slow_runs])} the ideal {ideal:.2f} s"
        "  (goal <= 1.2x)"
    )
    print(
        "      baseline, the same calls alone right after each run (the engine's HTTP client,"
        f" no queue, no database): {_spread([s / ideal for s in floor_runs])} the ideal;"
        " a run takes"
        f" {_spread([a / f for a, f in zip(slow_runs, floor_runs, strict=True)])} its baseline"
        "  (goal <= 1.1x)"
    )
    print(
        f"  (b) instant provider: {statistics.median(rates):.0f} cases/s"
        f"  [{rates[0]:.0f}-{rates[-1]:.0f}]"
    )
    print(
        "      baseline, the same calls alone right after each run (the engine's provider"
        f" client, call_model: no queue, no database): {statistics.median(floor_rates):.0f}"
        f" calls/s  [{floor_rates[0]:.0f}-{floor_rates[-1]:.0f}]; a run goes at"
        f" {_spread([f / r for r, f in zip(instant_runs, client_runs, strict=True)])} its"
        " baseline's rate  (goal >= 0.5x)"
    )
    print(
        "      this process's CPU time (a share of the machine no neighbour changes much):"
        f" {statistics.median(r for r, _ in cpu) * 1000 / CASES:.3f} ms per case in a run,"
        f" {statistics.median(f for _, f in cpu) * 1000 / CASES:.3f} ms per call alone"
    )
    if stolen.share is not None:
        print(f"      CPU time the hypervisor gave other guests in (a) and (b): {stolen.share:.0%}")


if __name__ == "__main__":
    import uvloop

    uvloop.run(run())  # `python -m bench.run_throughput`
