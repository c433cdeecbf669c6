"""Run throughput at scale: a run of 100,000 cases (instant provider, two deterministic
metrics, concurrency 50) on `python -m app serve` in a process of its own (two workers): the
sustained rate beside the same provider calls made alone through the engine's client, the
server's RSS sampled through the run, and the count of results (exactly one per case). The
cases are written straight into the database.
"""

from __future__ import annotations

import asyncio
import statistics
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text

from bench.harness import (
    StolenTime,
    api_post,
    bench_database,
    engine_settings,
    rss_bytes,
    serve_assay,
)
from bench.run_throughput import (
    CASES,
    CONCURRENCY,
    _client_calls,
    _run_on,
    _setup,
    provider,
    tenant_connection,
)
from database.core import Database, Tenant

LARGE_CASES = 100_000
RSS_EVERY = 0.2  # seconds between samples of the server's memory
FLOOR_REPEATS = 3

_TESTS = text("""
WITH written AS (
    INSERT INTO tests (id, organization_id, project_id, input, expected_output, context, tags,
                       variables, metadata, created_at, updated_at)
    SELECT gen_random_uuid(), :organization, :project, 'case ' || p, 'case ' || p, '[]'::jsonb,
           ARRAY[]::varchar[], '{}'::jsonb, '{}'::jsonb, now(), now()
    FROM generate_series(0, :cases - 1) AS p
    RETURNING id, input
)
INSERT INTO test_set_members (test_set_id, test_id, organization_id, position)
SELECT :test_set, id, :organization, split_part(input, ' ', 2)::int FROM written
""")


# --- (c) 100,000 cases on a server process -------------------------------------------------


@dataclass
class LargeRun:
    seconds: float  # POST /runs to completed
    sustained: float  # cases per second, from the first chunk's start to the run's end
    rss: list[int]  # the server's, sampled from before POST /runs to the run's end
    posted: int  # the index of the first sample taken once POST /runs had answered
    results: int
    distinct: int  # distinct (position, repetition) among them


async def _write_cases(runtime: str, setup: dict[str, Any]) -> None:
    """LARGE_CASES tests in a set of their own, straight into the database."""
    database = Database.connect(runtime)
    try:
        async with database.transaction(Tenant(uuid.UUID(setup["organization"]))) as session:
            await session.execute(
                _TESTS,
                {
                    "organization": uuid.UUID(setup["organization"]),
                    "project": uuid.UUID(setup["project"]),
                    "test_set": uuid.UUID(setup["test_set"]),
                    "cases": LARGE_CASES,
                },
            )
    finally:
        await database.dispose()


async def _large_run(
    client: httpx.AsyncClient, pid: int, setup: dict[str, Any], base_url: str, runtime: str
) -> LargeRun:
    rss, posted, sampling = [rss_bytes(pid)], [], True

    async def sample() -> None:
        while sampling:
            await asyncio.sleep(RSS_EVERY)
            rss.append(rss_bytes(pid))

    def mark() -> None:
        rss.append(rss_bytes(pid))
        posted.append(len(rss) - 1)

    sampler = asyncio.create_task(sample())
    try:
        seconds, current = await _run_on(client, setup, base_url, "large", url=runtime, posted=mark)
    finally:
        sampling = False
        await sampler
    rss.append(rss_bytes(pid))
    async with tenant_connection(setup["organization"], runtime) as connection:
        row = await connection.fetchrow(
            "SELECT count(*) AS results, count(DISTINCT (position, repetition)) AS keys,"
            " extract(epoch FROM r.finished_at - r.started_at) AS running"
            " FROM results JOIN runs r ON r.id = results.run_id WHERE r.id = $1"
            " GROUP BY r.finished_at, r.started_at",
            uuid.UUID(current["id"]),
        )
    sustained = LARGE_CASES / float(row["running"])
    return LargeRun(seconds, sustained, rss, posted[0], row["results"], row["keys"])


async def large() -> tuple[LargeRun, list[float]]:
    async with (
        bench_database() as (data_dir, owner, runtime),
        serve_assay(data_dir, owner, runtime, **engine_settings(CONCURRENCY)) as (pid, base_url),
        httpx.AsyncClient(base_url=base_url, timeout=600) as client,
        provider(0.0) as instant,
    ):
        setup = await _setup(client)
        await _run_on(client, setup, instant, "warm-up", url=runtime)  # the 1,000-case set
        body = {"project_id": setup["project"], "name": "large"}
        big = await api_post(client, "/test-sets", body)
        await _write_cases(runtime, {**setup, "test_set": big["id"]})
        owner_database = Database.connect(owner)
        try:  # the new rows' statistics, as autovacuum would gather them after an import
            async with owner_database.engine.begin() as connection:
                await connection.execute(text("ANALYZE tests, test_set_members"))
        finally:
            await owner_database.dispose()
        found = await _large_run(client, pid, {**setup, "test_set": big["id"]}, instant, runtime)
        floors = [await _client_calls(instant) for _ in range(FLOOR_REPEATS)]
        return found, floors


async def run() -> None:
    stolen = StolenTime()
    with stolen.measure():
        found, floors = await large()
    floor_rates = sorted(CASES / seconds for seconds in floors)
    mb = 2**20
    before, during = found.rss[0], found.rss[found.posted :]
    start, end, peak = during[0], during[-1], max(during)
    print(
        f"run at scale: {LARGE_CASES:,} cases, instant provider, 2 metrics, concurrency"
        f" {CONCURRENCY}, `python -m app serve` with 2 workers"
    )
    print(
        f"  {found.sustained:.0f} cases/s sustained (first chunk to the end; {found.seconds:.1f} s"
        f" from POST /runs)  (goal >= 1,500); baseline, the same calls alone through the"
        f" engine's provider client right after: {statistics.median(floor_rates):.0f} calls/s"
        f"  [{floor_rates[0]:.0f}-{floor_rates[-1]:.0f}]"
    )
    print(
        f"  server RSS while the run executes: {start / mb:.0f} MB at its start, {end / mb:.0f}"
        f" MB at its end (growth {(end - start) / mb:+.1f} MB), at most {peak / mb:.0f} MB"
        f" ({(peak - start) / mb:+.1f} MB; {len(during)} samples)  (goal: growth < 50 MB)"
    )
    print(
        f"  before POST /runs {before / mb:.0f} MB; while it pins the version,"
        f" at most {max(found.rss[: found.posted + 1]) / mb:.0f} MB; at the end"
        f" {(end - before) / mb:+.1f} MB over before"
    )
    exact = found.results == found.distinct == LARGE_CASES
    print(
        f"  results: {found.results:,}, distinct (case, repetition): {found.distinct:,}"
        f" of {LARGE_CASES:,}  ({'one each' if exact else 'NOT one each'})"
    )
    if stolen.share is not None:
        print(f"  CPU time the hypervisor gave other guests meanwhile: {stolen.share:.0%}")


if __name__ == "__main__":
    import uvloop

    uvloop.run(run())  # `python -m bench.run_at_scale`
