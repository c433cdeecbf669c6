"""The growth curve: what a test set of 1,000, 10,000 and 100,000 cases costs end to end, so
that anyone can see whether each step grows linearly with the cases.

For each size, against one `python -m app serve` process (API and its workers in that one
process) on a throw-away embedded database:

- import: the set as a CSV file, POST /test-sets/{id}/import;
- start: POST /runs against an instant OpenAI-compatible provider (bench.fake_provider, its
  own process), two deterministic metrics, concurrency 50; it pins a version of the set;
- run: from then until the run has completed (then GET /runs/{id} shows every case done);
- summary: GET /runs/{id}/summary;
- export: GET /runs/{id}/export?format=csv, the body read and thrown away as it streams.

Per phase: the wall time, the time per case, the server's CPU time (user + system),
PostgreSQL's CPU time (its sessions' apart from its background processes', see DatabaseCpu),
the server's peak RSS (sampled from /proc every 20 ms while the phase lasts) and that peak
less its RSS at rest just before.
The ratios size(10k)/size(1k) and size(100k)/size(10k) are the curve itself: linear growth is
about 10x each. On a shared machine the CPU times are the steadier figures (other processes
stretch the wall time, not the work done); a cost that grows faster than the cases shows as a
CPU ratio well above 10x. A round of 200 cases first runs every phase once unmeasured, so that
the first measured size does not pay for code loaded on first use.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import psutil

from bench.database_cpu import DatabaseCpu, postmaster
from bench.harness import StolenTime, api_post, bench_database, cases_csv, rss_bytes, serve_assay
from bench.run_throughput import provider
from database.core import Database, Tenant
from utils.config import Settings

SIZES = (1_000, 10_000, 100_000)
WARM_UP = 200
PHASES = ("import", "start", "run", "summary", "export")
CONCURRENCY = 50
SAMPLE_SECONDS = 0.02  # between two readings of the server's RSS
DATABASE_EVERY = 5  # RSS readings: PostgreSQL's processes are looked at every 0.1 s
REST_SECONDS = 0.5  # before each phase, so that its RSS at rest is read after the last one
TIMEOUT = 900.0  # one request: an import that grew quadratically must still end, and say so
PASSWORD = "bench-password-1"
MB = 2**20
TERMINAL = ("completed", "failed", "cancelled")
T = TypeVar("T")


@dataclass(frozen=True)
class Phase:
    seconds: float
    cpu_seconds: float  # the server's user + system time
    database_cpu_seconds: float  # PostgreSQL's sessions (see DatabaseCpu)
    background_cpu_seconds: float  # PostgreSQL's background processes
    rest: int  # the server's RSS just before (at rest, unless the phase follows on), bytes
    peak: int  # its highest RSS sampled during the phase, bytes

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.rest)


@asynccontextmanager
async def _run_status(
    runtime: str, organization: str
) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """Reads a run's status alone, on a driver connection of its own in a transaction of the
    organization: GET /runs/{id} counts the run's results on every read, so polling it would
    add a cost of its own that grows with the run."""
    reader = Database.connect(runtime, pool_size=1, max_overflow=0)
    try:
        async with reader.transaction(Tenant(uuid.UUID(organization))) as session:
            raw = await (await session.connection()).get_raw_connection()
            connection = raw.driver_connection
            assert connection is not None

            async def status(run_id: str) -> str:
                query = "SELECT status FROM runs WHERE id = $1"
                return str(await connection.fetchval(query, uuid.UUID(run_id)))

            yield status
    finally:
        await reader.dispose()


async def _setup(client: httpx.AsyncClient, provider_url: str) -> dict[str, Any]:
    """An organization, a project, the two metrics and the provider's model configuration."""
    registered = await api_post(
        client,
        "/auth/register",
        {"email": "growth@example.com", "password": PASSWORD, "name": "Bench"},
    )
    client.headers["Authorization"] = f"Bearer {registered['access_token']}"
    project = (await api_post(client, "/projects", {"name": "growth"}))["id"]
    metrics = []
    for body in (
        {"name": "contains", "type": "contains"},
        {"name": "short", "type": "word-count", "parameters": {"max": 10}},
    ):
        metrics.append((await api_post(client, "/metrics", {"project_id": project, **body}))["id"])
    model = await api_post(
        client,
        "/models",
        {
            "name": "instant",
            "provider": "openai-compatible",
            "model": "bench-model",
            "base_url": provider_url,
            "api_key": "sk-bench",
        },
    )
    return {
        "organization": registered["organization"]["id"],
        "project": project,
        "metrics": metrics,
        "model": model["id"],
    }


# --- the phases: each returns what the next one needs --------------------------------------


async def _import(client: httpx.AsyncClient, test_set: str, content: bytes, cases: int) -> None:
    response = await client.post(
        f"/api/v1/test-sets/{test_set}/import",
        content=content,
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["test_count"] == cases, response.json()


async def _start(client: httpx.AsyncClient, setup: dict[str, Any], test_set: str) -> str:
    """POST /runs: it pins the set's current version, published now for a set just imported
    (a snapshot of every case), and queues the run."""
    body = {
        "test_set_id": test_set,
        "target_model_id": setup["model"],
        "metric_ids": setup["metrics"],
        "concurrency": CONCURRENCY,
    }
    return str((await api_post(client, "/runs", body))["id"])


async def _run(
    client: httpx.AsyncClient, status: Callable[[str], Awaitable[str]], run_id: str, cases: int
) -> None:
    """Until the run ends (see _run_status), then GET /runs/{id}: every case done."""
    while await status(run_id) not in TERMINAL:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    current = (await client.get(f"/api/v1/runs/{run_id}")).json()
    assert current["status"] == "completed", current
    assert current["counts"]["done"] == cases, current["counts"]
    assert current["counts"]["errored"] == 0, current["counts"]


async def _summary(client: httpx.AsyncClient, run_id: str) -> None:
    response = await client.get(f"/api/v1/runs/{run_id}/summary")
    assert response.status_code == 200, response.text


async def _export(client: httpx.AsyncClient, run_id: str, cases: int) -> None:
    lines = 0
    params = {"format": "csv"}
    async with client.stream("GET", f"/api/v1/runs/{run_id}/export", params=params) as response:
        assert response.status_code == 200, await response.aread()
        async for chunk in response.aiter_raw():
            lines += chunk.count(b"\n")
    assert lines >= cases + 1, f"{lines} lines for {cases} results"  # a header, then each result


async def _measured(
    pid: int, database: DatabaseCpu, work: Callable[[], Awaitable[T]], *, rest: bool = True
) -> tuple[T, Phase]:
    """`work`'s outcome and what it cost: wall time, the server's CPU time and peak RSS, and
    PostgreSQL's CPU time. After a rest, unless the phase goes on from the one before."""
    if rest:
        await asyncio.sleep(REST_SECONDS)
    server = psutil.Process(pid)
    at_rest = peak = rss_bytes(pid)
    running = True

    async def sample() -> None:
        nonlocal peak
        samples = 0
        while running:
            peak = max(peak, rss_bytes(pid))
            samples += 1
            if samples % DATABASE_EVERY == 0:
                database.read()
            await asyncio.sleep(SAMPLE_SECONDS)

    cpu_before, database_before = server.cpu_times(), database.begin()
    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    try:
        outcome = await work()
    finally:
        seconds = time.perf_counter() - started
        cpu_after, database_after = server.cpu_times(), database.read()
        running = False
        await sampler
    peak = max(peak, rss_bytes(pid))
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    background = database.background
    sessions = database_after - database_before - background
    return outcome, Phase(seconds, cpu, sessions, background, at_rest, peak)


async def _size(
    client: httpx.AsyncClient,
    server: tuple[int, DatabaseCpu],
    setup: dict[str, Any],
    status: Callable[[str], Awaitable[str]],
    cases: int,
) -> dict[str, Phase]:
    """Every phase for a new set of `cases` cases."""
    content = cases_csv(cases)  # built before the clock starts
    body = {"project_id": setup["project"], "name": f"growth {cases}"}
    test_set = (await api_post(client, "/test-sets", body))["id"]
    pid, database = server

    async def measured(work: Callable[[], Awaitable[T]], rest: bool = True) -> tuple[T, Phase]:
        return await _measured(pid, database, work, rest=rest)

    phases: dict[str, Phase] = {}
    _, phases["import"] = await measured(lambda: _import(client, test_set, content, cases))
    run_id, phases["start"] = await measured(lambda: _start(client, setup, test_set))
    # The run is under way once started: its phase begins as the start's ends.
    _, phases["run"] = await measured(lambda: _run(client, status, run_id, cases), rest=False)
    _, phases["summary"] = await measured(lambda: _summary(client, run_id))
    _, phases["export"] = await measured(lambda: _export(client, run_id, cases))
    return phases


async def run() -> None:
    stolen = StolenTime()
    found: dict[int, dict[str, Phase]] = {}
    async with (
        bench_database() as (data_dir, owner, runtime),
        provider(0.0) as provider_url,
        serve_assay(
            data_dir,
            owner,
            runtime,
            ASSAY_WORKERS=str(Settings.model_fields["workers"].default),  # as an operator runs it
            ASSAY_ALLOW_PRIVATE_NETWORKS="true",
            ASSAY_MAX_RUN_CONCURRENCY=str(CONCURRENCY),
        ) as (pid, base_url),
        httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as client,
        AsyncExitStack() as stack,
    ):
        setup = await _setup(client, provider_url)
        server = pid, DatabaseCpu(postmaster(data_dir))
        status = await stack.enter_async_context(_run_status(runtime, setup["organization"]))
        await _size(client, server, setup, status, WARM_UP)
        await asyncio.sleep(REST_SECONDS)
        at_start = rss_bytes(pid)
        started = time.perf_counter()
        with stolen.measure():
            for cases in SIZES:
                found[cases] = await _size(client, server, setup, status, cases)
        total = time.perf_counter() - started
        at_end = rss_bytes(pid)
    _report(found, at_start, at_end, total, stolen)


def _report(
    found: dict[int, dict[str, Phase]],
    at_start: int,
    at_end: int,
    total: float,
    stolen: StolenTime,
) -> None:
    print(
        "\ngrowth curve by size: import (CSV), start (POST /runs, which pins a version of the"
        f" set), run (instant provider, 2 deterministic metrics, concurrency {CONCURRENCY}),"
        " summary, export (CSV, streamed); one `serve` process with its workers"
    )
    print(
        f"  server RSS at rest after a {WARM_UP}-case warm-up: {at_start / MB:.0f} MB;"
        f" after the last size: {at_end / MB:.0f} MB. CPU s: the server's, PostgreSQL's sessions'"
        " (DB) and background processes' (bg: I/O workers, checkpointer, autovacuum ...);"
        " growth: the server's peak RSS less its RSS just before the phase"
    )
    print(
        f"  {'cases':>7} {'phase':8} {'seconds':>8} {'us/case':>8} {'cases/s':>8}"
        f" {'CPU s':>7} {'DB CPU s':>8} {'bg CPU s':>8} {'peak RSS':>9} {'growth':>8}"
    )
    for cases, phases in found.items():
        for name in PHASES:
            phase = phases[name]
            print(
                f"  {cases:>7,} {name:8} {phase.seconds:8.2f} {phase.seconds / cases * 1e6:8.1f}"
                f" {cases / phase.seconds:8,.0f} {phase.cpu_seconds:7.2f}"
                f" {phase.database_cpu_seconds:8.2f} {phase.background_cpu_seconds:8.2f}"
                f" {phase.peak / MB:6.0f} MB {phase.growth / MB:+5.0f} MB"
            )
    small, middle, large = SIZES
    print(
        f"  growth ratios {middle // 1000}k/{small // 1000}k and {large // 1000}k/{middle // 1000}k"
        f" (linear = {middle // small}x and {large // middle}x); CPU times are counted in"
        " 10 ms ticks, so a phase of a few ticks gives a rough ratio"
    )
    for name in PHASES:
        a, b, c = (found[cases][name] for cases in SIZES)
        print(
            f"  {name:8} wall {_ratio(b.seconds, a.seconds)} {_ratio(c.seconds, b.seconds)}"
            f"   server CPU {_ratio(b.cpu_seconds, a.cpu_seconds)}"
            f" {_ratio(c.cpu_seconds, b.cpu_seconds)}"
            f"   DB CPU {_ratio(b.database_cpu_seconds, a.database_cpu_seconds)}"
            f" {_ratio(c.database_cpu_seconds, b.database_cpu_seconds)}"
            f"   RSS growth {a.growth / MB:.0f} / {b.growth / MB:.0f} / {c.growth / MB:.0f} MB"
        )
    share = stolen.share
    load = os.getloadavg()[1]
    print(
        f"  {sum(SIZES):,} cases in {total:.0f} s; CPU time the hypervisor gave other guests"
        " meanwhile: " + ("n/a" if share is None else f"{share:.0%}") + f"; load average over"
        f" the last 5 minutes {load:.1f} on {os.cpu_count()} CPUs"
    )


def _ratio(ours: float, base: float) -> str:
    return f"{ours / base:6.1f}x" if base > 0 else "   n/a"


if __name__ == "__main__":
    import uvloop

    uvloop.run(run())  # `python -m bench.growth_curve`, until it is listed in bench/__main__.py
