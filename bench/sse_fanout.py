"""Live streams: 2,000 SSE subscribers of one run on one server process.

The server is `python -m app serve` (uvicorn, uvloop, httptools) in a process of its own, on a
throw-away embedded database; the subscribers live in another process (bench.sse_clients).
This process commits the run's events one at a time (results.crud.record_events, then the
publisher's NOTIFY, as a worker would) and keeps each commit's wall-clock time.

- memory per stream: the server's RSS with every stream connected and live, less its RSS at
  rest just before (after a warm-up stream), over the number of streams;
- delivery, commit -> client: receive time less commit time, over every (event, stream) pair;
  the same with a single subscriber first is the baseline (NOTIFY, read, write: no fan-out).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import secrets
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.harness import bench_database, wait_healthy
from database.core import Database, Tenant
from database.results import crud as results_crud
from database.results.events import RESULT_RECORDED
from notifications.publisher import Publisher, install_publisher

STREAMS = 2000
EVENTS = 30
SPACING = 0.15  # seconds between commits (the publisher coalesces NOTIFYs within 0.1 s)
BASELINE_EVENTS = 15
PASSWORD = "bench-password-1"
OUTPUT = "The quick brown fox jumps over the lazy dog. " * 8  # a result's text, ~360 bytes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@asynccontextmanager
async def serve_on_embedded(
    data_dir: Path, owner: str, runtime: str
) -> AsyncIterator[tuple[int, str]]:
    """(pid, base URL) of `python -m app serve` on the given database, API only."""
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("ASSAY_")}
    env.update(
        ASSAY_DATA_DIR=str(data_dir),
        ASSAY_DATABASE_URL=runtime,
        ASSAY_MIGRATION_DATABASE_URL=owner,
        ASSAY_MIGRATE_ON_START="false",
        ASSAY_SECRET_KEY=secrets.token_urlsafe(48),
        ASSAY_ENCRYPTION_KEYS=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        ASSAY_WORKERS="0",
        ASSAY_BCRYPT_ROUNDS="4",
        ASSAY_LOG_LEVEL="WARNING",
        ASSAY_LOG_FORMAT="json",
    )
    log_path = data_dir / "server.log"
    with open(log_path, "w") as log:  # noqa: ASYNC230 (before the server starts)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app",
            "serve",
            "--port",
            str(port),
            env=env,
            stdout=log,
            stderr=log,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(process, base_url, log_path)
        yield process.pid, base_url
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)


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


async def _subscribe(
    port: int,
    run: tuple[uuid.UUID, str],
    count: int,
    expected: int,
    publish: Any,
    server_pid: int,
) -> tuple[dict[str, Any], dict[int, float], int, float]:
    """Opens `count` streams in the client process, then publishes: (what the clients got,
    the commits, server RSS with the streams connected, seconds to connect them all)."""
    run_id, token = run
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    started = time.perf_counter()
    clients = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.sse_clients",
        "--port",
        str(port),
        "--path",
        f"/public/runs/{run_id}/events?token={token}",
        "--count",
        str(count),
        "--out",
        str(out),
        "--events",
        str(expected),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert clients.stdin is not None and clients.stdout is not None
    try:
        line = (await asyncio.wait_for(clients.stdout.readline(), 150)).decode().strip()
        if not line.startswith("ready"):
            raise RuntimeError(f"subscribers: {line}")
        connect_seconds = time.perf_counter() - started
        await asyncio.sleep(1.0)  # let the server settle (replays done, garbage collected)
        rss = rss_bytes(server_pid)
        commits: dict[int, float] = await publish()
        clients.stdin.write(b"end\n")
        await clients.stdin.drain()
        line = (await asyncio.wait_for(clients.stdout.readline(), 60)).decode().strip()
        assert line == "done", line
        await clients.wait()
        received = json.loads(out.read_text())  # noqa: ASYNC240 (after the measurement)
    finally:
        if clients.returncode is None:
            clients.kill()
            await clients.wait()
        out.unlink(missing_ok=True)  # noqa: ASYNC240
    return received, commits, rss, connect_seconds


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


def _percentiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


async def run() -> None:
    _raise_file_limit(STREAMS + 512)  # the server process inherits it
    async with bench_database() as (data_dir, owner, runtime):
        database = Database.connect(runtime)
        publisher = Publisher(database)
        await publisher.start()
        install_publisher(publisher.runs_changed)
        try:
            async with serve_on_embedded(data_dir, owner, runtime) as (pid, base_url):
                port = int(base_url.rsplit(":", 1)[1])
                organization_id, (single, fanout) = await _setup(base_url)

                # Baseline: one subscriber (also warms the server's stream path up).
                got, commits, _, _ = await _subscribe(
                    port,
                    single,
                    1,
                    BASELINE_EVENTS,
                    lambda: _publish(database, organization_id, single[0], BASELINE_EVENTS),
                    pid,
                )
                base_latencies, base_missing = _latencies(got, commits)
                await asyncio.sleep(0.5)
                at_rest = rss_bytes(pid)
                got, commits, loaded, connect_seconds = await _subscribe(
                    port,
                    fanout,
                    STREAMS,
                    EVENTS,
                    lambda: _publish(database, organization_id, fanout[0], EVENTS),
                    pid,
                )
                latencies, missing = _latencies(got, commits)
        finally:
            install_publisher(None)
            await publisher.stop()
            await database.dispose()
    per_stream = (loaded - at_rest) / STREAMS
    p50, p99 = _percentiles(latencies) if latencies else (float("nan"), float("nan"))
    b50, b99 = _percentiles(base_latencies) if base_latencies else (float("nan"),) * 2
    print(
        f"live streams ({STREAMS} SSE subscribers on one process, {EVENTS} events"
        f" {SPACING * 1000:.0f} ms apart; connected in {connect_seconds:.1f} s)"
    )
    print(
        f"  memory: {per_stream / 1024:.1f} KB per stream (RSS +{(loaded - at_rest) / 2**20:.0f} MB"
        f" over {at_rest / 2**20:.0f} MB at rest)  (goal < 64 KB)"
    )
    print(
        f"  delivery commit -> client: p50 {p50:.0f} ms, p99 {p99:.0f} ms,"
        f" max {max(latencies, default=float('nan')):.0f} ms, missing {missing}"
        f" of {STREAMS * len(commits)}, dropped streams {got['failed']}  (goal p99 < 250 ms)"
    )
    print(f"  baseline, 1 subscriber: p50 {b50:.0f} ms, p99 {b99:.0f} ms, missing {base_missing}")
