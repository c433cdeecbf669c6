"""Exporting a large run (GET /runs/{id}/export) and a large test set (GET
/test-sets/{id}/export): the server's memory growth, the time to the first byte and the total
time, for 100,000 results of ~1 KB output and 2 evaluations each and for 100,000 cases, in
every format.

The server is `python -m app serve` in a process of its own (as bench.sse_fanout starts it); its
RSS is sampled every few milliseconds while the body is read, less its RSS just before. The
results and cases are written straight into the database. Baseline, measured alongside: the same
export of one page (500 results, 500 cases). A streamed export grows the server by about the
same for both, and sends its first byte as soon; an export built whole grows with its size.
Each export's CPU time, the server's and PostgreSQL's sessions', shows what its wall time is
made of (steadier than the wall time on a shared machine).
Goals: growth < 50 MB, first byte < 1 s, the 100,000-result CSV within 10 s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
from sqlalchemy import text

from bench.database_cpu import DatabaseCpu, postmaster
from bench.harness import StolenTime, api_post, bench_database, rss_bytes, serve_assay
from database.core import Database, Tenant

LARGE = (50_000, 2)  # cases, repetitions
SMALL = (250, 2)  # one page
SET_SIZES = {"small": 500, "large": 100_000}  # cases of a test set
FORMATS = ("json", "csv", "junit")
SET_FORMATS = ("json", "csv", "jsonl")
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
INSERT INTO evaluations (id, organization_id, result_id, run_id, position, metric_name,
                         metric_type, score, passed, reason)
SELECT gen_random_uuid(), r.organization_id, r.id, r.run_id, r.position, m.name, m.type,
       (r.status = 'passed')::int, r.status = 'passed', 'judged: ' || m.name
FROM results r,
     (VALUES ('contains', 'contains'), ('relevance', 'answer-relevance')) AS m(name, type)
WHERE r.run_id = :run
""")
_TESTS = text("""
WITH written AS (
    INSERT INTO tests (id, organization_id, project_id, input, expected_output, context, tags,
                       variables, metadata, created_at, updated_at)
    SELECT gen_random_uuid(), :organization, :project, 'question ' || p || repeat(' words', 40),
           'answer ' || p, jsonb_build_array('a passage of context ' || p), ARRAY['t' || p % 7],
           '{}'::jsonb, jsonb_build_object('n', p), now(), now()
    FROM generate_series(0, :cases - 1) AS p
    RETURNING id, input
)
INSERT INTO test_set_members (test_set_id, test_id, organization_id, position)
SELECT :test_set, id, :organization, split_part(input, ' ', 2)::int FROM written
""")


@dataclass
class Export:
    first_byte: float  # seconds
    seconds: float
    size: int  # bytes of the body
    growth: int  # the server's peak RSS while sending, less its RSS before
    cpu: float  # the server's CPU seconds (user + system)
    database_cpu: float  # PostgreSQL's sessions' CPU seconds (see DatabaseCpu)


async def _setup(client: httpx.AsyncClient) -> dict[str, Any]:
    registered = await api_post(
        client,
        "/auth/register",
        {"email": "export@example.com", "password": PASSWORD, "name": "Bench"},
    )
    client.headers["Authorization"] = f"Bearer {registered['access_token']}"
    project = await api_post(client, "/projects", {"name": "export"})
    tests = [{"input": f"question {i}"} for i in range(10)]
    ids = (await api_post(client, "/tests/bulk", {"project_id": project["id"], "tests": tests}))[
        "ids"
    ]
    test_set = await api_post(
        client, "/test-sets", {"project_id": project["id"], "name": "e", "test_ids": ids}
    )
    metric = await api_post(
        client, "/metrics", {"project_id": project["id"], "name": "contains", "type": "contains"}
    )
    model = await api_post(client, "/models", {"name": "demo", "provider": "demo"})
    runs: dict[str, Any] = {"project": uuid.UUID(project["id"])}
    for label in ("small", "large"):
        created = await api_post(
            client, "/test-sets", {"project_id": project["id"], "name": f"set {label}"}
        )
        runs[f"set_{label}"] = uuid.UUID(created["id"])
    for label in ("small", "large"):
        body = {
            "test_set_id": test_set["id"],
            "target_model_id": model["id"],
            "metric_ids": [metric["id"]],
        }
        runs[label] = uuid.UUID(
            (await api_post(client, "/runs", body))["id"]
        )  # no worker runs them
    return {"organization": uuid.UUID(registered["organization"]["id"]), **runs}


async def _write(database: Database, organization: uuid.UUID, run: uuid.UUID, size: tuple) -> None:
    cases, repetitions = size
    async with database.transaction(Tenant(organization)) as session:
        await session.execute(
            _RESULTS,
            {"organization": organization, "run": run, "cases": cases, "repetitions": repetitions},
        )
        await session.execute(_EVALUATIONS, {"run": run})


async def _write_set(database: Database, setup: dict[str, Any], label: str) -> None:
    async with database.transaction(Tenant(setup["organization"])) as session:
        await session.execute(
            _TESTS,
            {
                "organization": setup["organization"],
                "project": setup["project"],
                "test_set": setup[f"set_{label}"],
                "cases": SET_SIZES[label],
            },
        )


async def _analyze(owner: str) -> None:
    """The tables' statistics, as autovacuum gathers them while a run writes its results: the
    rows here arrive in one statement, and a planner that knows nothing of them would take
    an organization's index for a run's (a cost of fresh data, not of exporting)."""
    owner_database = Database.connect(owner)
    try:
        async with owner_database.engine.begin() as connection:
            await connection.execute(text("ANALYZE results, evaluations, tests, test_set_members"))
    finally:
        await owner_database.dispose()


async def _export(
    client: httpx.AsyncClient, pid: int, database: DatabaseCpu, path: str, fmt: str
) -> Export:
    await asyncio.sleep(0.5)  # the server at rest
    at_rest = peak = rss_bytes(pid)
    server = psutil.Process(pid)
    cpu_before, database_before = sum(server.cpu_times()[:2]), database.begin()
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
        async with client.stream("GET", f"/api/v1/{path}/export", params={"format": fmt}) as r:
            assert r.status_code == 200, await r.aread()
            async for chunk in r.aiter_raw():
                if first_byte is None:
                    first_byte = time.perf_counter() - started
                size += len(chunk)
    finally:
        seconds = time.perf_counter() - started
        cpu = sum(server.cpu_times()[:2]) - cpu_before
        database_cpu = database.read() - database_before - database.background
        sending = False
        await sampler
    growth = max(0, peak - at_rest)
    return Export(first_byte or seconds, seconds, size, growth, cpu, database_cpu)


async def run() -> None:
    stolen = StolenTime()
    found: dict[tuple[str, str], Export] = {}
    async with bench_database() as (data_dir, owner, runtime):
        database = Database.connect(runtime)
        try:
            async with (
                serve_assay(data_dir, owner, runtime) as (pid, base_url),
                httpx.AsyncClient(base_url=base_url, timeout=300) as client,
            ):
                setup = await _setup(client)
                for label, size in (("small", SMALL), ("large", LARGE)):
                    await _write(database, setup["organization"], setup[label], size)
                    await _write_set(database, setup, label)
                await _analyze(owner)
                exports = [(f"runs/{setup['small']}", fmt) for fmt in FORMATS]
                exports += [(f"test-sets/{setup['set_small']}", fmt) for fmt in SET_FORMATS]
                # Warm-up: every format's code has run once, and the large run and set have
                # been read once (the first export would pay for reading them from disk).
                exports += [(f"runs/{setup['large']}", "csv")]
                exports += [(f"test-sets/{setup['set_large']}", "jsonl")]
                cpu = DatabaseCpu(postmaster(data_dir))
                for path, fmt in exports:
                    await _export(client, pid, cpu, path, fmt)
                with stolen.measure():
                    for fmt in FORMATS:
                        for label in ("small", "large"):
                            path = f"runs/{setup[label]}"
                            found[label, fmt] = await _export(client, pid, cpu, path, fmt)
                    for fmt in SET_FORMATS:
                        for label in ("small", "large"):
                            path = f"test-sets/{setup[f'set_{label}']}"
                            found[f"set_{label}", fmt] = await _export(client, pid, cpu, path, fmt)
        finally:
            await database.dispose()

    results = {label: size[0] * size[1] for label, size in (("small", SMALL), ("large", LARGE))}
    print(
        f"run export, streamed ({results['large']:,} results of ~1 KB output, 2 evaluations"
        f" each; baseline: a one-page run of {results['small']:,})"
    )
    for fmt in FORMATS:
        _line(fmt, found["large", fmt], found["small", fmt])
    print(
        f"test set export, streamed ({SET_SIZES['large']:,} cases; baseline: a one-page set of"
        f" {SET_SIZES['small']:,})"
    )
    for fmt in SET_FORMATS:
        _line(fmt, found["set_large", fmt], found["set_small", fmt])
    if stolen.share is not None:
        print(f"  CPU time the hypervisor gave other guests meanwhile: {stolen.share:.0%}")


def _line(fmt: str, large: Export, small: Export) -> None:
    print(
        f"  {fmt:5s} {large.size / 2**20:6.1f} MB in {large.seconds:5.2f} s (baseline"
        f" {small.seconds:.2f} s, x{large.seconds / small.seconds:.0f}):"
        f" first byte {large.first_byte * 1000:5.0f} ms (baseline {small.first_byte * 1000:.0f}"
        f" ms), server RSS +{large.growth / 2**20:5.1f} MB (baseline"
        f" +{small.growth / 2**20:.1f} MB)"
    )
    # CPU times: what the wall time is made of, steadier than it on a shared machine.
    print(
        f"        CPU s: server {large.cpu:5.2f} (baseline {small.cpu:.2f}),"
        f" PostgreSQL's sessions {large.database_cpu:5.2f} (baseline {small.database_cpu:.2f})"
    )


if __name__ == "__main__":
    import uvloop

    uvloop.run(run())  # `python -m bench.export_stream`, until it is listed in bench/__main__.py
