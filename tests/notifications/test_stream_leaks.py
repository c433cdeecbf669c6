"""Clients that open a run's stream and go away leave nothing behind: after 1,000 cycles of
connect, read the first bytes, disconnect, the process holds no more asyncio tasks and the hub
no more subscribers or feeds than before."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Live

CYCLES = 1000
PARALLEL = 10  # clients at a time (the cycles of one client are sequential)


Counts = tuple[int, int, int]  # asyncio tasks, hub subscribers, hub feeds


async def _settled(probe: Callable[[], Counts], ceiling: Counts, seconds: float) -> Counts:
    """The counts once all are at most `ceiling` (or whatever they are after `seconds`):
    a closed connection is noticed, and its stream's task ends, a moment later."""
    deadline = time.monotonic() + seconds
    while True:
        now = probe()
        if all(a <= b for a, b in zip(now, ceiling, strict=True)) or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.1)


async def test_connect_disconnect_cycles_leak_no_tasks_or_subscribers(live: Live) -> None:
    assert live.notifications is not None
    hub = live.notifications.hub

    def probe() -> Counts:
        return len(asyncio.all_tasks()), hub.subscriber_count, hub.run_count

    with FakeOpenAI(require_api_key="sk-test", latency=120) as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": "q", "expected_output": "q"}])
        run = await live.run(test_set, target, metric_ids=[await live.any_answer()], concurrency=1)
        run_id = run["id"]
        token = await live.stream_token(run_id)
        url = live.events_url(run_id)
        # the run is under way (its model call hangs): streams stay in their live phase
        deadline = time.monotonic() + 20
        while (await live.get(f"/runs/{run_id}"))["status"] != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

        port = int(live.base_url.rsplit(":", 1)[1])
        request = (
            f"GET {url}?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()

        async def cycles(count: int) -> int:
            """Plain sockets (cheaper than an HTTP client): request, first bytes, close."""
            opened = 0
            for _ in range(count):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    writer.write(request)
                    head = b""
                    while b"retry:" not in head:
                        chunk = await asyncio.wait_for(reader.read(4096), 30)
                        assert chunk, head
                        head += chunk
                    assert head.startswith(b"HTTP/1.1 200"), head
                    opened += 1
                finally:
                    writer.close()
                    await writer.wait_closed()
            return opened

        async def round_of(total: int) -> int:
            counts = await asyncio.gather(*(cycles(total // PARALLEL) for _ in range(PARALLEL)))
            return sum(counts)

        # warm up (lazily created, long-lived tasks and connections), then take the baseline
        await round_of(PARALLEL)
        baseline = await _settled(probe, (10**9, 0, 0), 10)
        assert baseline[1:] == (0, 0), baseline

        started = time.monotonic()
        assert await round_of(CYCLES) == CYCLES
        took = time.monotonic() - started

        # while streams are open, the hub counts them (the probe can see a leak at all)
        async with (
            httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
            client.stream("GET", url, params={"token": token}) as response,
        ):
            async for _ in response.aiter_raw():
                break
            assert hub.subscriber_count == 1
            assert hub.run_count == 1

        after = await _settled(probe, baseline, 15)
        assert after[0] <= baseline[0], (after, baseline, took)
        assert after[1] == 0
        assert after[2] == 0
        assert (await live.get(f"/runs/{run_id}"))["status"] == "running"
        await live.post(f"/runs/{run_id}/cancel", {}, expect=200)
