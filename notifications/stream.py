"""One subscriber's stream of a run: replay from the table after Last-Event-ID, then live.

The subscriber is registered with the hub before the replay reads the table, and every item
carries its seq: the replay and the live part overlap rather than leave a gap, and the overlap
is skipped by seq, so the client sees every event once, in order.

The response is a plain ASGI response rather than sse-starlette's: with thousands of streams
open, its four tasks and a cancel scope per send per stream cost more memory and CPU than the
events themselves (measured by `make bench`). Here a stream is its request task plus one task
that notices the client leaving; heartbeats, the lifetime and the send timeout come from the
hub's one clock, and whatever is buffered goes out in one write.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from database.core import Database, Tenant
from notifications.hub import (
    SEND_TIMEOUT,
    Hub,
    Item,
    StreamEnd,
    StreamLimits,
    Subscriber,
    encode_event,
)

REPLAY_PAGE = 500
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass events through as they come
]


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        database: Database,
        hub: Hub,
        *,
        run_id: uuid.UUID,
        organization_id: uuid.UUID,
        after: int,
        committed: int,
        limits: StreamLimits,
        retry_ms: int,
        terminal: frozenset[str],
    ) -> None:
        """`after`: the last seq the client has; `committed`: the run's last seq when checked;
        `terminal`: the event types that end the stream (unless their data says `continues`)
        when no event follows them in the same batch."""
        self.status_code = 200
        self.background = None
        self.raw_headers = list(HEADERS)
        self.database = database
        self.hub = hub
        self.run_id = run_id
        self.organization_id = organization_id
        self.after = after
        self.committed = committed
        self.limits = limits
        self.retry_ms = retry_ms
        self.terminal = terminal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        subscriber = self.hub.subscribe(
            self.run_id, self.organization_id, self.committed, self.limits
        )
        subscriber.task = asyncio.current_task()
        watcher = asyncio.create_task(_watch_for_disconnect(receive, subscriber))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self._chunks(subscriber):
                subscriber.sending_since = time.monotonic()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                subscriber.last_write = time.monotonic()
                subscriber.sending_since = 0.0
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if subscriber.ending != SEND_TIMEOUT or subscriber.task is None:
                raise
            subscriber.task.uncancel()  # our own clock gave up on a client that took nothing
        except OSError:
            pass  # the client went away mid-write
        finally:
            watcher.cancel()
            self.hub.unsubscribe(subscriber)

    async def _chunks(self, subscriber: Subscriber) -> AsyncIterator[bytes]:
        yield f"retry: {self.retry_ms}\n\n".encode()
        sent = self.after
        if sent < subscriber.known:
            async for page in self._replay(sent, None):
                yield b"".join(item.encoded for item in page)
                sent = page[-1].seq
                if self._ends(page[-1]) and sent >= subscriber.known:
                    return  # (a run given more repetitions has events after its first end)
        while True:
            try:
                batch = await subscriber.next_batch()
            except StreamEnd as end:  # the client is to come back: say when, and why
                yield f"retry: {self.retry_ms}\n: {end.reason}\n\n".encode()
                return
            parts: list[bytes] = []
            ended = False  # the last stored event of the batch is terminal
            for item in batch:
                if item.seq == -1:  # heartbeat
                    parts.append(item.encoded)
                elif item.seq == 0:  # a live delta: it carries the id of the last stored event
                    parts.append(f"id: {sent}\n".encode() + item.encoded)
                elif item.seq > sent:
                    if item.seq > sent + 1:  # defensive: fill any hole from the table
                        async for page in self._replay(sent, item.seq):
                            parts.extend(missed.encoded for missed in page)
                            sent = page[-1].seq
                    parts.append(item.encoded)
                    sent = item.seq
                    ended = self._ends(item)
            if parts:
                yield b"".join(parts)
            if ended:
                return

    def _ends(self, item: Item) -> bool:
        return item.type in self.terminal and not item.continues

    async def _replay(self, after: int, before: int | None) -> AsyncIterator[list[Item]]:
        """Stored events after `after` (and before `before`), a page per short transaction."""
        while True:
            async with self.database.transaction(Tenant(self.organization_id)) as session:
                rows = await self.hub.read_events(session, self.run_id, after, limit=REPLAY_PAGE)
            page = [
                encode_event(row.seq, row.type, row.data)
                for row in rows
                if before is None or row.seq < before
            ]
            if page:
                yield page
                after = page[-1].seq
            if len(page) < REPLAY_PAGE:
                return


async def _watch_for_disconnect(receive: Receive, subscriber: Subscriber) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    subscriber.end("disconnected")
