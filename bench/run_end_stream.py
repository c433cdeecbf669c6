"""A run's end, as a client following its events sees it: how long after the transaction that
ends the run began (its `finished_at`) the `run.finished` event reaches a client reading the
run's event stream (SSE), on `python -m app serve` in a process of its own (two workers),
1,000 cases on the 50 ms provider at concurrency 50, as (a) of bench.run_throughput.

The baseline, from the same runs and the same client: the run's start (`run.started` against
`started_at`). It is a run's first event, which no other has held back: announced at its commit,
or replayed from the log as the client connects, if it came first.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import httpx
from httpx_sse import EventSource

from bench.harness import StolenTime, api_post, bench_database, engine_settings, serve_assay
from bench.run_throughput import CONCURRENCY, LATENCY, _setup, provider, tenant_connection

RUNS = 7
ENDS = ("run.finished", "run.cancelled")


async def _follow(client: httpx.AsyncClient, run_id: str) -> dict[str, float]:
    """When (wall clock) the run's start and end events reached this client."""
    seen: dict[str, float] = {}
    async with client.stream(
        "GET", f"/public/runs/{run_id}/events", headers={"Accept": "text/event-stream"}
    ) as response:
        response.raise_for_status()
        async for event in EventSource(response).aiter_sse():
            if event.event in ("run.started", *ENDS):
                seen.setdefault(event.event, time.time())
            if event.event in ENDS:
                return seen
    raise RuntimeError(f"the stream of run {run_id} closed before its end")


async def _runs(base_url: str, runtime: str) -> list[tuple[float, float]]:
    """(start delay, end delay) in ms per run, after a warm-up run."""
    found: list[tuple[float, float]] = []
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=120) as client,
        provider(LATENCY) as slow,
    ):
        setup = await _setup(client)
        model = await api_post(
            client,
            "/models",
            {
                "name": "fifty-ms",
                "provider": "openai-compatible",
                "model": "bench-model",
                "base_url": slow,
                "api_key": "sk-bench",
            },
        )
        body: dict[str, Any] = {
            "test_set_id": setup["test_set"],
            "target_model_id": model["id"],
            "metric_ids": setup["metrics"],
            "concurrency": CONCURRENCY,
        }
        for index in range(RUNS + 1):
            run_id = (await api_post(client, "/runs", body))["id"]
            seen = await _follow(client, run_id)
            async with tenant_connection(setup["organization"], runtime) as connection:
                row = await connection.fetchrow(
                    "SELECT status, started_at, finished_at FROM runs WHERE id = $1",
                    uuid.UUID(run_id),
                )
            assert row["status"] == "completed", row["status"]
            if index:  # the first is the warm-up
                found.append(
                    (
                        (seen["run.started"] - row["started_at"].timestamp()) * 1000,
                        (seen["run.finished"] - row["finished_at"].timestamp()) * 1000,
                    )
                )
    return found


async def run() -> None:
    stolen = StolenTime()
    async with (
        bench_database() as (data_dir, owner, runtime),
        serve_assay(data_dir, owner, runtime, **engine_settings(CONCURRENCY)) as (_pid, base_url),
    ):
        with stolen.measure():
            found = await _runs(base_url, runtime)
    starts, ends = sorted(start for start, _ in found), sorted(end for _, end in found)
    print(
        f"a run's end on its event stream (SSE; {len(found)} runs of 1,000 cases, 50 ms"
        f" provider, concurrency {CONCURRENCY}, server in a process of its own)"
    )
    print(
        f"  run.finished reached the client {statistics.median(ends):.0f} ms"
        f" [{ends[0]:.0f}-{ends[-1]:.0f}] after the transaction ending the run began"
    )
    print(
        f"  baseline, the same runs' run.started: {statistics.median(starts):.0f} ms"
        f" [{starts[0]:.0f}-{starts[-1]:.0f}] after its transaction began;"
        f" end / start = {statistics.median(ends) / statistics.median(starts):.1f}x"
    )
    if stolen.share is not None:
        print(f"  CPU steal during the measurements: {stolen.share:.1%}")


if __name__ == "__main__":
    import uvloop

    uvloop.run(run())
