"""Cross-process fan-out of run events: process A (ASSAY_WORKERS=0) serves the stream, process B
runs the run. B's worker stores the events and NOTIFYs; A's LISTEN connection hears it and its
hub hands the events to A's subscribers. Real uvicorn processes on one embedded database."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import httpx
import pytest

from tests.e2e.servers import Server, create_run, live_env, start_server
from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Event, read_events

pytestmark = pytest.mark.slow

CASES = 40
TERMINAL_EVENTS = ("run.finished", "run.cancelled")


async def _subscribe(
    url: str, headers: dict[str, str], seconds: float
) -> list[tuple[float, Event]]:
    """Every stored event of one SSE connection (comments and retry skipped), with the
    monotonic time it arrived; returns at the stream's end."""
    received: list[tuple[float, Event]] = []
    async with (
        asyncio.timeout(seconds),
        httpx.AsyncClient(timeout=httpx.Timeout(30, read=seconds)) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in read_events(response):
            if event.event is not None:
                received.append((time.monotonic(), event))
    return received


def _started_workers(log: str) -> int | None:
    """The worker count a server logged at startup ("assay started")."""
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("event") == "assay started":
            return int(record["workers"])
    return None


def _clusters(times: list[float], gap: float) -> int:
    """How many bursts the arrival times make (a burst ends at a pause longer than `gap`)."""
    return 1 + sum(1 for a, b in itertools.pairwise(times) if b - a > gap)


async def test_events_of_a_run_executed_by_another_process_reach_the_api_process(tmp_path):
    data_dir = tmp_path / "data"
    servers: list[Server] = []
    # 40 cases x 0.3 s at concurrency 4: about 3 s of running, in ~10 waves.
    with FakeOpenAI(require_api_key="sk-test", latency=0.3) as fake:
        try:
            api_only = start_server(live_env(data_dir, 0), tmp_path / "api.log")
            servers.append(api_only)
            worker = start_server(live_env(data_dir, 2), tmp_path / "worker.log")
            servers.append(worker)
            for server in servers:  # started together: they share the first-start work
                await asyncio.to_thread(server.wait_healthy, 120)

            async with httpx.AsyncClient(base_url=f"{api_only.url}/api/v1", timeout=30) as api:
                run = await create_run(api, fake, cases=CASES, concurrency=4)
                issued = await api.post(f"/runs/{run['id']}/stream-token", json={})
                assert issued.status_code == 200, issued.text
                stream = issued.json()
                assert stream["events_url"].startswith(f"/public/runs/{run['id']}/events?token=")

                by_token, by_header = await asyncio.gather(
                    _subscribe(f"{api_only.url}{stream['events_url']}", {}, 60),
                    _subscribe(
                        f"{api_only.url}/public/runs/{run['id']}/events",
                        {"Authorization": api.headers["Authorization"]},
                        60,
                    ),
                )
                final = (await api.get(f"/runs/{run['id']}")).json()
        finally:
            for server in servers:
                server.stop()

    # Only B executed the run: A has no workers.
    assert final["status"] == "completed", final
    assert final["counts"]["done"] == CASES, final
    assert _started_workers(api_only.log()) == 0, api_only.log()[-3000:]
    assert _started_workers(worker.log()) == 2, worker.log()[-3000:]
    assert fake.requests, "the fake provider was never called"

    for received in (by_token, by_header):
        events = [event for _, event in received]
        kinds = [event.event for event in events]
        assert [int(event.id or 0) for event in events] == list(range(1, len(events) + 1)), kinds
        assert kinds[0] == "run.started", kinds
        assert kinds[-1] == "run.finished", kinds
        assert sum(kind in TERMINAL_EVENTS for kind in kinds) == 1, kinds
        assert events[0].data["total"] == CASES
        results = [event.data for event in events if event.event == "result.recorded"]
        keys = sorted((r["position"], r["repetition"]) for r in results)
        assert keys == [(position, 0) for position in range(CASES)]
        assert all(r["status"] == "passed" for r in results), results
        finished = events[-1].data
        assert finished["status"] == "completed", finished
        assert finished["done"] == CASES and finished["passed"] == CASES, finished
        assert finished["total"] == CASES, finished

    # Both connections saw the same stored events.
    assert [(e.id, e.event) for _, e in by_token] == [(e.id, e.event) for _, e in by_header]

    # Live, not a replay after the fact nor the hub's 2 s safety poll: the results arrived in
    # many bursts while the run was running (the poll alone would deliver ~one burst per 2 s).
    arrivals = [at for at, event in by_token if event.event == "result.recorded"]
    assert arrivals[-1] - arrivals[0] > 1.0, "all results arrived at once: not streamed live"
    assert _clusters(arrivals, gap=0.15) >= 4, [round(t - arrivals[0], 2) for t in arrivals]
