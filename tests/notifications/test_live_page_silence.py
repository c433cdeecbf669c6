"""The live run page (app/static/live_run.js) in a real headless Chromium, behind a TCP proxy
whose event-stream connection goes silent without closing (a NAT or proxy timing the flow out,
a laptop waking on another network): EventSource reports nothing, so the page notices the
missing heartbeats itself, and reopens its stream after the last event it has. While the
heartbeats come, a quiet stream is left alone."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tests.e2e.browser import DevTools, chromium, find_browser
from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Live
from tests.notifications.test_live_page_reconnect import PAGE_STATE, _resumed_after, _until

pytestmark = pytest.mark.slow

CASES = 4
# Seconds of a case: the stream is quiet between results but for heartbeats (every 0.5 s here;
# the page gives up on a stream after 2.5 of them without a word). Watched for QUIET_SECONDS,
# it has a gap that long at least once.
LATENCY = 3.0
QUIET_SECONDS = 3.0


@dataclass
class _Connection:
    carries_events: bool = False
    silent: bool = False


@dataclass
class SilencingProxy:
    """Forwards TCP to the server. `silence()` stops forwarding, either way, on the connections
    that carried a run's event stream so far, and keeps them open: nothing more reaches the
    browser on them, not even their end. New connections are forwarded as before."""

    upstream_port: int
    connections: list[_Connection] = field(default_factory=list)
    port: int = 0

    def silence(self) -> int:
        silenced = [c for c in self.connections if c.carries_events]
        for connection in silenced:
            connection.silent = True
        return len(silenced)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection()
        self.connections.append(connection)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer, connection, from_browser=True)),
            asyncio.ensure_future(self._pipe(up_reader, writer, connection, from_browser=False)),
        ]
        try:
            await pipes[0]  # the browser closed its side (or went away)
        finally:
            for task in pipes:
                task.cancel()
            for sink in (writer, up_writer):
                sink.transport.abort()

    @staticmethod
    async def _pipe(
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        connection: _Connection,
        *,
        from_browser: bool,
    ) -> None:
        with contextlib.suppress(OSError):
            while chunk := await source.read(65536):
                if from_browser and b"/events" in chunk:
                    connection.carries_events = True
                if not connection.silent:
                    sink.write(chunk)
                    await sink.drain()
        if not from_browser and not connection.silent:
            sink.close()  # the server's end, passed on unless silenced

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SilencingProxy]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()


def _events_requests(page: DevTools, run_id: str) -> int:
    return len(_resumed_after(page, run_id))


async def _watched(page: DevTools, seconds: float) -> None:
    """The page looked at for `seconds` (its requests are collected meanwhile)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await page.evaluate(PAGE_STATE)
        await asyncio.sleep(0.1)


async def test_the_page_reopens_a_stream_gone_silent(live: Live, runtime, monkeypatch, tmp_path):
    binary = find_browser()
    monkeypatch.setattr(runtime.settings, "sse_retry_ms", 200)
    port = int(live.base_url.rsplit(":", 1)[1])
    with FakeOpenAI(require_api_key="sk-test", latency=LATENCY) as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": f"q{i}"} for i in range(CASES)])
        metric = await live.any_answer()
        run = await live.run(test_set, target, metric_ids=[metric], concurrency=1)
        token = await live.stream_token(run["id"])
        async with (
            SilencingProxy(port).running() as proxy,
            chromium(binary, tmp_path / "profile", tmp_path / "chromium.log") as page,
        ):
            for domain in ("Page", "Runtime", "Network"):
                await page.send(f"{domain}.enable")
            url = f"http://127.0.0.1:{proxy.port}/public/runs/{run['id']}?token={token}"
            await page.send("Page.navigate", {"url": url})
            await _until(page, lambda state: state["state"] == "open" and state["finals"] >= 1)
            await _watched(page, QUIET_SECONDS)  # a stream with nothing but heartbeats a while
            quiet = await page.evaluate(PAGE_STATE)
            quiet_requests = _events_requests(page, run["id"])

            assert proxy.silence() >= 1
            fake.latency = 0.1
            await live.wait(run["id"])
            final = await _until(
                page, lambda state: state["status"] == "completed" and state["finals"] == CASES
            )
            resumed = _resumed_after(page, run["id"])

    assert (quiet["state"], quiet_requests) == ("open", 1), (quiet, quiet_requests)
    assert final["keys"] == [f"{position}:0" for position in range(CASES)], final
    assert final["connection"] == "", final
    # Reopened after the last event the page had, not from the start.
    assert len(resumed) >= 2 and int(resumed[-1] or 0) > 0, resumed
