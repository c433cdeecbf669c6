"""A worker-only process (`python -m app worker`) shares the API process's bootstrap: it starts
on the same database, runs the runs an API-only process queues, and stops in order on SIGTERM,
handing back nothing unfinished."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import pytest

from tests.e2e.servers import create_run, live_env, start_server, start_worker
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.slow

CASES = 12


def _log_events(path) -> list[dict]:
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _first(records: list[dict], event: str) -> dict:
    return next(record for record in records if record.get("event") == event)


async def test_a_worker_process_runs_what_the_api_queues_and_stops_in_order(tmp_path):
    data_dir = tmp_path / "data"
    with FakeOpenAI(require_api_key="sk-test") as fake:
        api = start_server(live_env(data_dir, 0), tmp_path / "api.log")
        worker = start_worker(live_env(data_dir, 2), tmp_path / "worker.log")
        try:
            await asyncio.to_thread(api.wait_healthy, 120)
            async with httpx.AsyncClient(base_url=f"{api.url}/api/v1", timeout=30) as client:
                run = await create_run(client, fake, cases=CASES, concurrency=4)
                deadline = time.monotonic() + 60
                while (current := (await client.get(f"/runs/{run['id']}")).json())[
                    "status"
                ] not in ("completed", "failed", "cancelled"):
                    assert time.monotonic() < deadline, current
                    await asyncio.sleep(0.2)
            worker.send_signal(signal.SIGTERM)
            returncode = await asyncio.to_thread(worker.wait, 30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            api.stop()

    assert current["status"] == "completed", current
    assert current["counts"]["passed"] == CASES, current
    assert len(fake.requests) == CASES
    assert returncode == 0
    worker_log = _log_events(tmp_path / "worker.log")
    events = [record.get("event") for record in worker_log]
    assert _first(worker_log, "assay started")["workers"] == 2
    # Stopped in reverse order: the pool (nothing handed back), then the process.
    assert events.index("workers started") < events.index("workers stopped")
    assert events.index("workers stopped") < events.index("assay stopped")
    assert _first(worker_log, "workers stopped")["handed_back"] == 0
    assert _first(_log_events(tmp_path / "api.log"), "assay started")["workers"] == 0
