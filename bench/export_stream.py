"""Exporting a large run (GET /runs/{id}/export): the server's memory growth and the time to the
first byte, for 40,000 results of ~1 KB output and 2 evaluations each, in every format.

The server is `python -m app serve` in a process of its own (as bench.sse_fanout starts it); its
RSS is sampled every few milliseconds while the body is read, less its RSS just before. The
results are written straight into the database. Baseline, measured alongside: the same export
of a one-page run (500 results). A streamed export grows the server by about the same for both,
and sends its first byte as soon; an export built whole grows with the run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text

from bench.harness import StolenTime, bench_database
from bench.sse_fanout import rss_bytes, serve_on_embedded
from database.core import Database, Tenant

LARGE = (20_000, 2)  # cases, repetitions
SMALL = (250, 2)  # one page
FORMATS = ("json", "csv", "junit")
PASSWORD = "bench-password-1"

_RESULTS = text("""
INSERT INTO results (id, organization_id, run_id, position, repetition, test_id, input, output,
                     status, latency_ms, input_tokens, output_tokens, cost, cached)
SELECT gen_random_uuid(), :organization, :run, p, rep, NULL,
       jsonb_build_object('text', 'question ' || p), repeat('answer ' || p || ', ', 80),
       CASE WHEN p % 10 = 0 THEN 'failed' ELSE 'passed' END,
       40 + random() * 120, 20, 30, 0.00005, false
FROM generate_series(0, :cases - 1) AS p, generate_series(0, :repetitions - 1) AS rep
""")
_EVALUATIONS = text("""
INSERT INTO evaluations (id, organization_id, result_id, run_id, metric_name, metric_type, score,
                         passed, reason)
SELECT gen_random_uuid(), r.organization_id, r.id, r.run_id, m.name, m.type,
       (r.status = 'passed')::int, r.status = 'passed', 'judged: ' || m.name
FROM results r,
     (VALUES ('contains', 'contains'), ('relevance', 'answer-relevance')) AS m(name, type)
WHERE r.run_id = :run
""")


@dataclass
class Export:
    first_byte: float  # seconds
    seconds: float
    size: int  # bytes of the body
    growth: int  # the server's peak RSS while sending, less its RSS before


async def _setup(client: httpx.AsyncClient) -> dict[str, Any]:
    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await client.post(f"/api/v1{path}", json=body)
        assert response.status_code in (200, 201, 202), (path, response.text)
        return dict(response.json())

    registered = await post(
        "/auth/register", {"email": "export@example.com", "password": PASSWORD, "name": "Bench"}
    )
    client.headers["Authorization"] = f"Bearer {registered['access_token']}"
    project = await post("/projects", {"name": "export"})
    tests = [{"input": f"question {i}"} for i in range(10)]
    ids = (await post("/tests/bulk", {"project_id": project["id"], "tests": tests}))["ids"]
    test_set = await post("/test-sets", {"project_id": project["id"], "name": "e", "test_ids": ids})
    metric = await post(
        "/metrics", {"project_id": project["id"], "name": "contains", "type": "contains"}
    )
    model = await post("/models", {"name": "demo", "provider": "demo"})
    runs = {}
    for label in ("small", "large"):
        body = {
            "test_set_id": test_set["id"],
            "target_model_id": model["id"],
            "metric_ids": [metric["id"]],
        }
        runs[label] = uuid.UUID((await post("/runs", body))["id"])  # no worker runs them
    return {"organization": uuid.UUID(registered["organization"]["id"]), **runs}


async def _write(database: Database, organization: uuid.UUID, run: uuid.UUID, size: tuple) -> None:
    cases, repetitions = size
    async with database.transaction(Tenant(organization)) as session:
        await session.execute(
            _RESULTS,
            {"organization": organization, "run": run, "cases": cases, "repetitions": repetitions},
        )
        await session.execute(_EVALUATIONS, {"run": run})


async def _export(client: httpx.AsyncClient, pid: int, run: uuid.UUID, fmt: str) -> Export:
    await asyncio.sleep(0.5)  # the server at rest
    at_rest = peak = rss_bytes(pid)
    sending = True

    async def sample() -> None:
        nonlocal peak
        while sending:
            peak = max(peak, rss_bytes(pid))
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    first_byte, size = None, 0
    started = time.perf_counter()
    try:
        async with client.stream("GET", f"/api/v1/runs/{run}/export", params={"format": fmt}) as r:
            assert r.status_code == 200, await r.aread()
            async for chunk in r.aiter_raw():
                if first_byte is None:
                    first_byte = time.perf_counter() - started
                size += len(chunk)
    finally:
        seconds = time.perf_counter() - started
        sending = False
        await sampler
    return Export(first_byte or seconds, seconds, size, max(0, peak - at_rest))


async def run() -> None:
    stolen = StolenTime()
    found: dict[tuple[str, str], Export] = {}
    async with bench_database() as (data_dir, owner, runtime):
        database = Database.connect(runtime)
        try:
            async with (
                serve_on_embedded(data_dir, owner, runtime) as (pid, base_url),
                httpx.AsyncClient(base_url=base_url, timeout=300) as client,
            ):
                setup = await _setup(client)
                for label, size in (("small", SMALL), ("large", LARGE)):
                    await _write(database, setup["organization"], setup[label], size)
                for fmt in FORMATS:  # warm-up: every format's code has run once
                    await _export(client, pid, setup["small"], fmt)
                with stolen.measure():
                    for fmt in FORMATS:
                        for label in ("small", "large"):
                            found[label, fmt] = await _export(client, pid, setup[label], fmt)
        finally:
            await database.dispose()

    results = {label: size[0] * size[1] for label, size in (("small", SMALL), ("large", LARGE))}
    print(
        f"run export, streamed ({results['large']:,} results of ~1 KB output, 2 evaluations"
        f" each; baseline: a one-page run of {results['small']:,})"
    )
    for fmt in FORMATS:
        large, small = found["large", fmt], found["small", fmt]
        print(
            f"  {fmt:5s} {large.size / 2**20:6.1f} MB in {large.seconds:5.2f} s:"
            f" first byte {large.first_byte * 1000:5.0f} ms (baseline {small.first_byte * 1000:.0f}"
            f" ms), server RSS +{large.growth / 2**20:5.1f} MB (baseline"
            f" +{small.growth / 2**20:.1f} MB)"
        )
    if stolen.share is not None:
        print(f"  CPU time the hypervisor gave other guests meanwhile: {stolen.share:.0%}")


if __name__ == "__main__":
    import uvloop

    uvloop.run(run())  # `python -m bench.export_stream`, until it is listed in bench/__main__.py
