"""A model's requests-per-minute holds across processes: an API process with workers and a
worker-only process share one run against one fake provider, which counts what it receives."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from starlette.requests import Request

from tests.e2e.servers import live_env, start_server, start_worker
from tests.fakes.openai_server import FakeOpenAI, RecordedRequest
from tests.helpers import PASSWORD

pytestmark = pytest.mark.slow

PER_MINUTE = 120
INTERVAL = 60 / PER_MINUTE
CASES = 24
CHUNK_SIZE = 3  # eight chunks: both processes take some
WINDOW_SECONDS = 5.0


@dataclass(frozen=True)
class Arrival:
    at: float
    pid: int | None


class CountingProvider(FakeOpenAI):
    """The fake provider, noting when each chat request arrived and which process sent it
    (the process holding the client end of the connection)."""

    def __init__(self) -> None:
        super().__init__(require_api_key="sk-test")
        self.senders: set[int] = set()
        self.arrivals: list[Arrival] = []
        self._arrivals_lock = threading.Lock()
        # A connection's client port, looked up once: scanning the processes' sockets on every
        # request would hold up this server's loop, and with it the next arrival's stamp.
        self._sender_of_port: dict[int | None, int | None] = {}

    async def record(self, request: Request) -> RecordedRequest:
        at = time.monotonic()
        recorded = await super().record(request)
        if request.url.path.endswith("/chat/completions"):
            port = request.client.port if request.client else None
            pid = self._sender_of_port.get(port)
            if pid is None:
                pid = self._sender_of_port[port] = self._sender(port)
            with self._arrivals_lock:
                self.arrivals.append(Arrival(at, pid))
        return recorded

    def _sender(self, client_port: int | None) -> int | None:
        for pid in self.senders:
            try:
                connections = psutil.Process(pid).net_connections(kind="tcp")
            except psutil.Error:
                continue
            for connection in connections:
                if (
                    connection.laddr
                    and connection.raddr
                    and connection.laddr.port == client_port
                    and connection.raddr.port == self.port
                ):
                    return pid
        return None


async def _create_paced_run(api: httpx.AsyncClient, provider: FakeOpenAI) -> str:
    registered = await api.post(
        "/auth/register",
        json={"email": "paced@example.com", "password": PASSWORD, "name": "Paced"},
    )
    assert registered.status_code == 201, registered.text
    api.headers["Authorization"] = f"Bearer {registered.json()['access_token']}"

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await api.post(path, json=body)
        assert response.status_code in (200, 201, 202), response.text
        return dict(response.json())

    model = await post(
        "/models",
        {
            "name": "paced",
            "provider": "openai-compatible",
            "model": "fake-model",
            "base_url": provider.base_url,
            "api_key": "sk-test",
            "requests_per_minute": PER_MINUTE,
        },
    )
    project = await post("/projects", {"name": "paced"})
    tests = [{"input": f"case {i}", "expected_output": f"case {i}"} for i in range(CASES)]
    ids = await post("/tests/bulk", {"project_id": project["id"], "tests": tests})
    test_set = await post(
        "/test-sets", {"project_id": project["id"], "name": "s", "test_ids": ids["ids"]}
    )
    metric = await post("/metrics", {"project_id": project["id"], "name": "m", "type": "contains"})
    run = await post(
        "/runs",
        {
            "test_set_id": test_set["id"],
            "target_model_id": model["id"],
            "metric_ids": [metric["id"]],
            "concurrency": 8,
        },
    )
    return str(run["id"])


async def _until_started(log_path: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while "workers started" not in (log := await asyncio.to_thread(log_path.read_text)):
        assert time.monotonic() < deadline, log
        await asyncio.sleep(0.2)


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """The provider stamps arrivals in this process, whose heap holds the whole suite's objects:
    a full collection meanwhile would hold the stamps back and show a burst that never was."""
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("frozen_heap")
async def test_two_processes_together_keep_to_the_models_requests_per_minute(tmp_path):
    data_dir = tmp_path / "data"
    env = {"ASSAY_RUN_CHUNK_SIZE": str(CHUNK_SIZE)}
    with CountingProvider() as provider:
        api = start_server({**live_env(data_dir, 2), **env}, tmp_path / "api.log")
        worker = start_worker({**live_env(data_dir, 2), **env}, tmp_path / "worker.log")
        provider.senders = {api.process.pid, worker.pid}
        try:
            await asyncio.to_thread(api.wait_healthy, 90)
            await _until_started(tmp_path / "worker.log")
            async with httpx.AsyncClient(base_url=f"{api.url}/api/v1", timeout=30) as client:
                run_id = await _create_paced_run(client, provider)
                deadline = time.monotonic() + 45
                while (run := (await client.get(f"/runs/{run_id}")).json())["status"] not in (
                    "completed",
                    "failed",
                    "cancelled",
                ):
                    assert time.monotonic() < deadline, run
                    await asyncio.sleep(0.25)
        finally:
            worker.terminate()
            await asyncio.to_thread(worker.wait, 30)
            api.stop()

    assert run["status"] == "completed", run
    assert run["counts"]["passed"] == CASES, run
    arrivals = sorted(provider.arrivals, key=lambda arrival: arrival.at)
    assert len(arrivals) == CASES

    # Both processes called the provider, a chunk's worth at least each.
    by_process = Counter(arrival.pid for arrival in arrivals)
    assert set(by_process) == {api.process.pid, worker.pid}, by_process
    assert min(by_process.values()) >= CHUNK_SIZE, by_process

    stamps = [arrival.at for arrival in arrivals]
    # Over the whole run: no more than the limit allows for its duration, give or take one
    # (two processes pacing alone would have taken half the time).
    span = stamps[-1] - stamps[0]
    assert span * PER_MINUTE / 60 + 2 >= CASES, (span, stamps)
    # In any window, at most the limit's share of it (plus the one on its edge).
    most_in_a_window = max(
        bisect_left(stamps, start + WINDOW_SECONDS) - index for index, start in enumerate(stamps)
    )
    assert most_in_a_window <= WINDOW_SECONDS * PER_MINUTE / 60 + 1, stamps
    # Evenly spaced: no burst, whichever process sent the call.
    gaps = [b - a for a, b in pairwise(stamps)]
    assert min(gaps) >= INTERVAL * 0.4, gaps
