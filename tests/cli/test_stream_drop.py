"""A stream cut mid-run (by a proxy that severs every connection after a moment, mid-event
as often as not): the command resumes from the last event it saw and counts every case once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import CONTROL, Lab

pytestmark = pytest.mark.slow


class SeveringProxy:
    """Forwards TCP to `target_port`; every connection is cut `lifetime` seconds after it
    opens, whatever it is in the middle of."""

    def __init__(self, target_port: int, lifetime: float) -> None:
        self.target_port = target_port
        self.lifetime = lifetime
        self.port = 0
        self.severed = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> SeveringProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _close(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while chunk := await source.read(512):
                sink.write(chunk)
                await sink.drain()

        pipes = [
            asyncio.ensure_future(pipe(reader, upstream_writer)),
            asyncio.ensure_future(pipe(upstream_reader, writer)),
        ]
        _, pending = await asyncio.wait(pipes, timeout=self.lifetime)
        if pending:
            self.severed += 1
        for task in pipes:
            task.cancel()
        for sink in (writer, upstream_writer):
            sink.transport.abort()


@pytest.fixture
def proxy(lab: Lab) -> Iterator[SeveringProxy]:
    with SeveringProxy(lab.server.port, lifetime=0.7) as running:
        yield running


def test_a_severed_stream_resumes_without_duplicates_or_gaps(
    lab: Lab, proxy: SeveringProxy, tmp_path: Path
) -> None:
    test_set = lab.test_set(60)
    metric = lab.metric()
    lab.fake.latency = 0.1  # 60 cases x 0.1 s at concurrency 2: about 3 s of running
    report = tmp_path / "report.json"
    done = lab.assay(
        "run",
        "-s",
        test_set["name"],
        "-m",
        lab.model_name,
        "--metric",
        metric["name"],
        "--concurrency",
        "2",
        "--json",
        str(report),
        ASSAY_URL=f"http://127.0.0.1:{proxy.port}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    written = json.loads(report.read_text())
    followed = written["followed"]
    assert followed["reconnects"] >= 2, followed
    assert proxy.severed >= 2
    # Every case counted once: 60, no more (no duplicate after a resume), no fewer (no gap).
    assert (followed["passed"], followed["failed"], followed["errored"]) == (60, 0, 0)
    assert "60/60 cases (100%): 60 passed, 0 failed, 0 errored" in done.stdout
    assert not CONTROL.search(done.stdout)
