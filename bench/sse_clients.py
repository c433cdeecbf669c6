"""Many SSE subscribers in one process, for bench.sse_fanout (run it as a separate process,
so its CPU is not the server's and no GIL is shared).

`python -m bench.sse_clients --port P --path /public/runs/ID/events?token=T --count N --out F`

Opens N plain HTTP/1.1 connections (asyncio protocols: no client library in the way), prints
`ready N` once every stream has answered (its `retry:` line: the subscriber is registered),
then records the wall-clock time each `id:` arrives. On `end` from stdin it waits for the
stragglers (up to --grace seconds) and writes {"received": [[[seq, time], ...], ...],
"failed": count} to --out, then prints `done`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import sys
import time

EVENT_ID = re.compile(rb"\nid: (\d+)\r?\n")


def raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


class Stream(asyncio.Protocol):
    """One subscriber: the raw response, its `id:` lines timed as they complete."""

    def __init__(self, request: bytes, ready: asyncio.Event, counter: list[int], total: int):
        self.request = request
        self.ready_all = ready
        self.counter = counter
        self.total = total
        self.buffer = b""
        self.live = False
        self.closed = False
        self.status = b""
        self.received: list[tuple[int, float]] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buffer = self.buffer + data
        if not self.live:
            if not self.status and b"\r\n" in buffer:
                self.status = buffer.split(b"\r\n", 1)[0]
            if b"retry:" not in buffer:
                self.buffer = buffer
                return
            self.live = True
            self.counter[0] += 1
            if self.counter[0] == self.total:
                self.ready_all.set()
        end = buffer.rfind(b"\n\n")  # only whole events: an `id:` line may be cut in two
        if end < 0:
            self.buffer = buffer
            return
        for match in EVENT_ID.finditer(buffer, 0, end + 1):
            self.received.append((int(match.group(1)), now))
        self.buffer = buffer[end + 1 :]  # keep the "\n" a next `id:` line starts after

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--events", type=int, required=True, help="expected per stream")
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--parallel", type=int, default=100, help="connects in flight")
    parser.add_argument("--connect-seconds", type=float, default=300.0, help="to be all live")
    args = parser.parse_args()
    raise_file_limit(args.count + 256)
    loop = asyncio.get_running_loop()
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    ).encode()
    ready = asyncio.Event()
    counter = [0]
    gate = asyncio.Semaphore(args.parallel)

    async def connect(index: int) -> None:
        async with gate:
            stream = Stream(request, ready, counter, args.count)
            streams[index] = stream
            try:
                await loop.create_connection(lambda: stream, "127.0.0.1", args.port)
            except OSError:
                stream.closed = True

    async def reconnect_refused() -> int:
        """A connection closed before its stream answered is opened again, as an
        EventSource would (a loaded server may refuse some of thousands of connects)."""
        again = 0
        while not ready.is_set():
            await asyncio.sleep(1.0)
            refused = [i for i, s in enumerate(streams) if s.closed and not s.live]
            again += len(refused)
            await asyncio.gather(*(connect(i) for i in refused))
        return again

    streams = [Stream(request, ready, counter, args.count) for _ in range(args.count)]
    await asyncio.gather(*(connect(i) for i in range(args.count)))
    reconnecting = asyncio.create_task(reconnect_refused())
    try:
        await asyncio.wait_for(ready.wait(), args.connect_seconds)
    except TimeoutError:
        statuses = {s.status.decode(errors="replace") for s in streams if not s.live}
        refused = sum(1 for s in streams if s.closed and not s.live)
        print(
            f"not ready: {counter[0]} of {args.count} live; {refused} refused at the moment;"
            f" others: {statuses}",
            flush=True,
        )
        sys.exit(1)
    print(f"ready {counter[0]} (reconnected {await reconnecting})", flush=True)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while (await reader.readline()).strip() != b"end":
        pass
    deadline = time.monotonic() + args.grace
    while time.monotonic() < deadline and any(  # noqa: ASYNC110 (polling is simplest here)
        len(s.received) < args.events and not s.closed for s in streams
    ):
        await asyncio.sleep(0.05)
    for stream in streams:
        if stream.transport is not None:
            stream.transport.close()
    with open(args.out, "w") as handle:  # noqa: ASYNC230 (at the end, nothing else runs)
        json.dump(
            {
                "received": [s.received for s in streams],
                "failed": sum(1 for s in streams if s.closed and len(s.received) < args.events),
            },
            handle,
        )
    print("done", flush=True)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
