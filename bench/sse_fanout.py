"""Live streams: 5,000 SSE subscribers of one run on one server process.

The server is `python -m app serve` (uvicorn, uvloop, httptools) in a process of its own, on a
throw-away embedded database; the subscribers live in other processes (bench.sse_clients, the
streams split between CLIENT_PROCESSES of them, so no single client's reading order adds its
own queueing to the figures).
This process commits the run's events one at a time (results.crud.record_events, then the
publisher's NOTIFY, as a worker would) and keeps each commit's wall-clock time.

- memory per stream: the server's RSS with every stream connected and live, less its RSS at
  rest just before (after a warm-up stream), over the number of streams;
- delivery, commit -> client: receive time less commit time, over every (event, stream) pair;
  the same with a single subscriber first is the baseline (NOTIFY, read, write: no fan-out);
- the CPU steal over both measurements: the figures mean what they say only when it is low.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.harness import StolenTime, bench_database, rss_bytes, serve_assay
from database.core import Database, Tenant
from database.results import crud as results_crud
from database.results.events import RESULT_RECORDED
from notifications.publisher import Publisher, install_publisher

STREAMS = 5000
CLIENT_PROCESSES = 2
EVENTS = 30
SPACING = 0.15  # seconds between commits (the publisher coalesces NOTIFYs within 0.1 s)
BASELINE_EVENTS = 15
PASSWORD = "bench-password-1"
OUTPUT = "The quick brown fox jumps over the lazy dog. " * 8  # a result's text, ~360 bytes


def _raise_file_limit(needed: int) -> int:
    """Raises this process's open-file limit (the server inherits it) toward `needed`, up to
    the hard limit: the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def cpu_seconds(pid: int) -> tuple[float, float]:
    """The process's (user, system) CPU seconds so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def _setup(base_url: str) -> tuple[uuid.UUID, list[tuple[uuid.UUID, str]]]:
    """An organization with two queued runs (baseline, fan-out): (organization, [(run, token)])."""
    async with httpx.AsyncClient(base_url=f"{base_url}/api/v1", timeout=30) as client:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = await client.post(path, json=body)
            assert response.status_code in (200, 201, 202), (path, response.text)
            return dict(response.json())

        registered = await post(
            "/auth/register", {"email": "sse@example.com", "password": PASSWORD, "name": "Bench"}
        )
        client.headers["Authorization"] = f"Bearer {registered['access_token']}"
        project = await post("/projects", {"name": "sse"})
        tests = [{"input": f"case {i}", "expected_output": "ok"} for i in range(10)]
        ids = (await post("/tests/bulk", {"project_id": project["id"], "tests": tests}))["ids"]
        test_set = await post(
            "/test-sets", {"project_id": project["id"], "name": "sse", "test_ids": ids}
        )
        metric = await post(
            "/metrics", {"project_id": project["id"], "name": "contains", "type": "contains"}
        )
        model = await post("/models", {"name": "demo", "provider": "demo", "model": "demo"})
        runs = []
        for _ in range(2):
            run = await post(
                "/runs",
                {
                    "test_set_id": test_set["id"],
                    "target_model_id": model["id"],
                    "metric_ids": [metric["id"]],
                },
            )
            token = await post(f"/runs/{run['id']}/stream-token", {})
            runs.append((uuid.UUID(run["id"]), str(token["token"])))
    return uuid.UUID(registered["organization"]["id"]), runs


async def _publish(
    database: Database, organization_id: uuid.UUID, run_id: uuid.UUID, count: int
) -> dict[int, float]:
    """Commits `count` events one at a time; seq -> wall-clock time the commit returned."""
    commits: dict[int, float] = {}
    for position in range(count):
        data = {
            "position": position,
            "repetition": 1,
            "status": "passed",
            "output": OUTPUT,
            "latency_ms": 812,
            "evaluations": [{"metric": "contains", "score": 1.0, "passed": True}],
        }
        async with database.transaction(Tenant(organization_id)) as session:
            seq = await results_crud.record_events(
                session,
                run_id=run_id,
                organization_id=organization_id,
                events=[(RESULT_RECORDED, data)],
            )
        commits[seq] = time.time()  # the after-commit hook has handed the run to the publisher
        await asyncio.sleep(SPACING)
    return commits


async def _start_clients(
    port: int, path: str, count: int, expected: int, out: Path
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.sse_clients",
        "--port",
        str(port),
        "--path",
        path,
        "--count",
        str(count),
        "--out",
        str(out),
        "--events",
        str(expected),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def _tell_all(
    clients: list[asyncio.subprocess.Process], word: bytes | None, seconds: float
) -> list[str]:
    """Sends `word` (if any) to every client process, then waits for each one's next line,
    which must be the expected answer (`ready ...` to none, `done` to `end`): the lines."""

    async def one(client: asyncio.subprocess.Process) -> str:
        assert client.stdin is not None and client.stdout is not None
        if word is not None:
            client.stdin.write(word + b"\n")
            await client.stdin.drain()
        line = (await asyncio.wait_for(client.stdout.readline(), seconds)).decode().strip()
        expected = "done" if word == b"end" else "ready"
        if not line.startswith(expected):
            raise RuntimeError(f"subscribers: {line!r}")
        return line

    return await asyncio.gather(*(one(client) for client in clients))


@dataclass
class Measured:
    received: dict[str, Any]
    commits: dict[int, float]  # seq -> wall-clock time of its commit
    rss: int  # the server's, with every stream connected
    connect_seconds: float
    cpu: tuple[float, float]  # the server's (user, system) CPU seconds while publishing
    client_cpu: float  # the client processes' CPU seconds (user + system) meanwhile
    reconnected: int  # connections the server closed before answering, opened again


async def _subscribe(
    port: int,
    run: tuple[uuid.UUID, str],
    count: int,
    expected: int,
    publish: Any,
    server_pid: int,
) -> Measured:
    """Opens `count` streams in the client processes, then publishes."""
    run_id, token = run
    path = f"/public/runs/{run_id}/events?token={token}"
    shares = [
        count // CLIENT_PROCESSES + (i < count % CLIENT_PROCESSES) for i in range(CLIENT_PROCESSES)
    ]
    shares = [share for share in shares if share]
    outs: list[Path] = []
    for _ in shares:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            outs.append(Path(handle.name))
    started = time.perf_counter()
    clients = [
        await _start_clients(port, path, share, expected, out)
        for share, out in zip(shares, outs, strict=True)
    ]
    try:
        ready = await _tell_all(clients, None, 330)
        reconnected = sum(int(n) for line in ready for n in re.findall(r"reconnected (\d+)", line))
        connect_seconds = time.perf_counter() - started
        await asyncio.sleep(1.0)  # let the server settle (replays done, garbage collected)
        rss = rss_bytes(server_pid)
        user, system = cpu_seconds(server_pid)
        clients_before = sum(sum(cpu_seconds(client.pid)) for client in clients)
        commits: dict[int, float] = await publish()
        await asyncio.sleep(0.5)  # the last event's fan-out
        user_after, system_after = cpu_seconds(server_pid)
        clients_cpu = sum(sum(cpu_seconds(client.pid)) for client in clients) - clients_before
        await _tell_all(clients, b"end", 60)
        for client in clients:
            await client.wait()
        received: dict[str, Any] = {"received": [], "failed": 0}
        for out in outs:
            part = json.loads(out.read_text())
            received["received"] += part["received"]
            received["failed"] += part["failed"]
    finally:
        for client in clients:
            if client.returncode is None:
                client.kill()
                await client.wait()
        for out in outs:
            out.unlink(missing_ok=True)
    return Measured(
        received,
        commits,
        rss,
        connect_seconds,
        (user_after - user, system_after - system),
        clients_cpu,
        reconnected,
    )


def _latencies(received: dict[str, Any], commits: dict[int, float]) -> tuple[list[float], int]:
    """Delivery times in ms over every (event, stream) pair, and the pairs never delivered."""
    latencies: list[float] = []
    missing = 0
    for stream in received["received"]:
        arrived = {seq: at for seq, at in stream}
        for seq, committed in commits.items():
            if seq in arrived:
                latencies.append((arrived[seq] - committed) * 1000)
            else:
                missing += 1
    return latencies, missing


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 (NaN when nothing arrived)."""
    if len(values) < 2:
        return (values[0],) * 3 if values else (float("nan"),) * 3
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


async def run() -> None:
    limit = _raise_file_limit(STREAMS + 512)  # the server process inherits it
    if limit < STREAMS + 512:
        print(f"  (open-file limit {limit} is below {STREAMS + 512}: streams will be refused)")
    stolen = StolenTime()
    async with bench_database() as (data_dir, owner, runtime):
        database = Database.connect(runtime)
        publisher = Publisher(database)
        await publisher.start()
        install_publisher(publisher.runs_changed)
        try:
            # One organization's 5,000 streams: past its default share of the process.
            room = {"ASSAY_SSE_MAX_STREAMS_PER_ORGANIZATION": str(STREAMS + 10)}
            async with serve_assay(data_dir, owner, runtime, **room) as (pid, base_url):
                port = int(base_url.rsplit(":", 1)[1])
                organization_id, (single, fanout) = await _setup(base_url)

                # Baseline: one subscriber (also warms the server's stream path up).
                with stolen.measure():
                    base = await _subscribe(
                        port,
                        single,
                        1,
                        BASELINE_EVENTS,
                        lambda: _publish(database, organization_id, single[0], BASELINE_EVENTS),
                        pid,
                    )
                base_latencies, base_missing = _latencies(base.received, base.commits)
                await asyncio.sleep(0.5)
                at_rest = rss_bytes(pid)
                with stolen.measure():
                    fan = await _subscribe(
                        port,
                        fanout,
                        STREAMS,
                        EVENTS,
                        lambda: _publish(database, organization_id, fanout[0], EVENTS),
                        pid,
                    )
                latencies, missing = _latencies(fan.received, fan.commits)
        finally:
            install_publisher(None)
            await publisher.stop()
            await database.dispose()
    per_stream = (fan.rss - at_rest) / STREAMS
    p50, p95, p99 = _percentiles(latencies)
    b50, b95, b99 = _percentiles(base_latencies)
    print(
        f"live streams ({STREAMS:,} SSE subscribers on one process, {EVENTS} events"
        f" {SPACING * 1000:.0f} ms apart, clients in {CLIENT_PROCESSES} processes;"
        f" connected in {fan.connect_seconds:.1f} s, {fan.reconnected} of them again)"
    )
    print(
        f"  memory: {per_stream / 1024:.1f} KB per stream"
        f" (RSS +{(fan.rss - at_rest) / 2**20:.0f} MB over {at_rest / 2**20:.0f} MB at rest)"
        "  (goal <= 64 KB)"
    )
    print(
        f"  delivery commit -> client: p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms,"
        f" max {max(latencies, default=float('nan')):.0f} ms, missing {missing}"
        f" of {STREAMS * len(fan.commits)}, dropped streams {fan.received['failed']}"
        "  (goal p99 < 100 ms)"
    )
    # Where the time goes: the server's CPU per event and stream (the write's system call
    # against the Python around it), beside the single subscriber's per event.
    deliveries = STREAMS * len(fan.commits)
    user, system = fan.cpu
    print(
        f"  server CPU per event and stream: {(user + system) / deliveries * 1e6:.1f} us"
        f" (user {user / deliveries * 1e6:.1f}, system {system / deliveries * 1e6:.1f});"
        f" per event with 1 subscriber: {sum(base.cpu) / len(base.commits) * 1e3:.2f} ms;"
        f" the clients' (reading): {fan.client_cpu / deliveries * 1e6:.1f} us"
    )
    print(
        f"  baseline, 1 subscriber: p50 {b50:.0f} ms, p95 {b95:.0f} ms, p99 {b99:.0f} ms,"
        f" missing {base_missing}; fan-out p99 / baseline p99 = {p99 / b99:.1f}x"
    )
    if stolen.share is not None:
        print(f"  CPU steal during the measurements: {stolen.share:.1%}")


if __name__ == "__main__":
    import uvloop

    uvloop.run(run())
