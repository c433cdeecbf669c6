"""One subscriber's stream of a run: replay from the table after Last-Event-ID, then live.

The subscriber is registered with the hub before the replay reads the table, and every item
carries its seq: the replay and the live part overlap rather than leave a gap, and the overlap
is skipped by seq, so the client sees every event once, in order.

The response is a plain ASGI response rather than sse-starlette's: with thousands of streams
open, its four tasks and a cancel scope per send per stream cost more memory and CPU than the
events themselves (measured by `make bench`). Here a stream is its request task plus one task
that notices the client leaving; heartbeats, the lifetime and the send timeout come from the
hub's one clock, and whatever is buffered goes out in one write.

Once live, the stream lets the hub write for it (`Subscriber.write_now`): with thousands of
streams, waking each one's task for every event cost more than the write itself. The hub's
loop writes the bytes to the connection itself where the server offers that (`WRITE_BODY`),
or else starts the ASGI send; the server takes the bytes without waiting unless the client
is not reading (its flow control paused the transport), and only then is the rest of that
send handed back to the stream's task.

Only the response's start and its last (empty) body go through the app's middleware, which
add their headers to the start and see the response end (the request's log line, its span).
Every chunk between goes straight to the server's own send, which the app's outermost layer
records in the scope (`SERVER_SEND`, app/middleware.py): through a dozen send wrappers, a
chunk cost more than the server's write. This holds only while no middleware changes,
buffers or counts body messages (tests/app/test_public_raw_send.py lists those allowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Generator
from functools import partial
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from database.core import Database, Tenant
from notifications.frames import Item, delta_frame, encode_event
from notifications.hub import Hub
from notifications.recheck import Credential
from notifications.subscriber import (
    SEND_TIMEOUT,
    UNREADABLE,
    StreamEnd,
    StreamLimits,
    Subscriber,
)

log = structlog.get_logger(__name__)

REPLAY_PAGE = 500
# A replay's first page holds this many events; each after it about REPLAY_PAGE_BYTES, as
# many as the page before suggests (up to REPLAY_PAGE): fewer when they are large (an agent's
# steps), so a stream never holds hundreds of large events at once.
REPLAY_FIRST_PAGE = 100
REPLAY_PAGE_BYTES = 1_000_000
# How long a replay waits for one of the hub's slots before its stream ends (retry: then the
# client's Last-Event-ID): with the pool exhausted, the queue for them moves a pool timeout at
# a time.
REPLAY_SLOT_WAIT_SECONDS = 10.0
# The scope key under which the outermost layer puts the server's own `send`.
SERVER_SEND = "assay.server_send"
# The scope key under which the server (app/http_protocol.py) puts its connection's `abort`:
# a stream given up on for a client that takes nothing drops what is buffered for it.
CONNECTION_ABORT = "assay.abort_connection"
# The scope key under which the server puts a writer of the response's next chunk, straight to
# its connection (app/http_protocol.py): `write(body) -> bool`, False when the server's send
# must take the body instead (the client is not reading).
WRITE_BODY = "assay.write_body"
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
        run_ended: bool,
        credential: Credential | None = None,
    ) -> None:
        """`after`: the last seq the client has; `committed`: the run's last seq when checked;
        `terminal`: the event types that end the stream (unless their data says `continues`)
        when no event follows them in the same batch; `credential`: what opened the stream,
        which ends once that is no longer good; `run_ended`: whether the run had ended when
        checked (if not, an end up to `committed` was that of a round before a repeat)."""
        self.status_code = 200
        self.background = None
        self.raw_headers = list(HEADERS)
        self.database = database
        self.hub = hub
        self.run_id = run_id
        self.organization_id = organization_id
        self.after = after
        self.committed = committed
        self.run_ended = run_ended
        self.limits = limits
        self.retry_ms = retry_ms
        self.terminal = terminal
        self.credential = credential

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        subscriber = self.hub.subscribe(
            self.run_id, self.organization_id, self.committed, self.limits, self.credential
        )
        subscriber.task = asyncio.current_task()
        subscriber.terminal = self.terminal
        self._subscriber = subscriber
        self._send = body_send = scope.get(SERVER_SEND, send)
        self._write_body = scope.get(WRITE_BODY)
        watcher = asyncio.create_task(_watch_for_disconnect(receive, subscriber))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self._chunks(subscriber):
                subscriber.sending_since = time.monotonic()
                await body_send({"type": "http.response.body", "body": chunk, "more_body": True})
                subscriber.last_write = time.monotonic()
                subscriber.sending_since = 0.0
            subscriber.sending_since = time.monotonic()  # the end waits for the client too
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if subscriber.ending != SEND_TIMEOUT or subscriber.task is None:
                raise
            subscriber.task.uncancel()  # our own clock gave up on a client that took nothing
            # Not closed, which would hold what is buffered until the client took it.
            if (abort := scope.get(CONNECTION_ABORT)) is not None:
                abort()
        except OSError:
            pass  # the client went away mid-write
        finally:
            subscriber.write_now = None
            if subscriber.pending is not None:  # begun by the hub, never finished
                subscriber.pending[0].close()
                subscriber.pending = None
            watcher.cancel()
            self.hub.unsubscribe(subscriber)

    async def _chunks(self, subscriber: Subscriber) -> AsyncIterator[bytes]:
        yield f"retry: {self.retry_ms}\n\n".encode()
        sent = self.after
        if sent < subscriber.known:
            async for page in self._replay(subscriber, sent, None):
                yield b"".join(item.encoded for item in page)
                sent = page[-1].seq
                if self._ends(page[-1]) and sent >= subscriber.known and self._new_end(sent):
                    return  # (a run given more repetitions has events after its first end)
            if sent < subscriber.known and subscriber.ending is None:
                # Retention pruned the run's log under the replay (whole, so nothing is
                # left to send): going live, the stream idled to its lifetime, its run shown
                # stopped partway. It ends, saying why; resumed, the stream is empty (204).
                yield b": the run's events were pruned\n\n"
                return
        subscriber.sent = sent
        subscriber.write_now = self._write_now
        while True:
            try:
                batch = await subscriber.next_batch()
            except StreamEnd as end:  # the client is to come back: say when, and why
                yield f"retry: {self.retry_ms}\n: {end.reason}\n\n".encode()
                return
            if subscriber.pending is not None:
                await self._finish_send(subscriber)
            sent = subscriber.sent  # the hub may have written for the stream meanwhile
            parts: list[bytes] = []
            ended = False  # the last stored event of the batch is terminal
            for item in batch:
                if item.seq == -1:  # heartbeat
                    parts.append(item.encoded)
                elif item.seq == 0:
                    parts.append(delta_frame(item, sent))
                elif item.seq > sent:
                    if item.seq > sent + 1:  # defensive: fill any hole from the table
                        async for page in self._replay(subscriber, sent, item.seq):
                            parts.extend(missed.encoded for missed in page)
                            sent = page[-1].seq
                        if subscriber.ending is not None:
                            break  # the fill stopped short: nothing after its hole
                    parts.append(item.encoded)
                    sent = item.seq
                    ended = self._ends(item)
            subscriber.sent = sent
            if parts:
                yield b"".join(parts)
            if ended:
                return

    def _write_now(self, frame: bytes) -> None:
        """Called from the hub's loop, outside this stream's task, while the task waits."""
        if self._write_body is not None and self._write_body(frame):
            return
        subscriber = self._subscriber
        message = {"type": "http.response.body", "body": frame, "more_body": True}
        sending = self._send(message).__await__()  # stepped by hand, as a task would
        try:
            waiting = sending.send(None)
        except StopIteration:
            return  # written: the usual case
        except Exception:  # the connection is unusable: the task ends the stream
            subscriber.end("disconnected")
            return
        subscriber.sending_since = time.monotonic()
        subscriber.hand_over((sending, waiting))

    async def _finish_send(self, subscriber: Subscriber) -> None:
        """Drives a send the hub began to its end, in this task (where the send timeout can
        cancel it): what it waits on is awaited here, then it resumes."""
        sending: Generator[Any, None, None]
        sending, waiting = subscriber.pending
        subscriber.pending = None
        try:
            while True:
                if waiting is None:  # a bare yield: let the loop run once
                    await asyncio.sleep(0)
                else:  # a future, already marked as awaited: wait for it, not on it
                    await asyncio.wait([waiting])
                waiting = sending.send(None)
        except StopIteration:
            pass
        finally:
            sending.close()
        subscriber.last_write = time.monotonic()
        subscriber.sending_since = 0.0

    def _ends(self, item: Item) -> bool:
        return item.type in self.terminal and not item.continues

    def _new_end(self, seq: int) -> bool:
        """An end replayed at `seq` is the run's: not that of a round before a repeat still
        queued when the stream was opened, whose events are still to come."""
        return self.run_ended or seq > self.committed

    async def _replay(
        self, subscriber: Subscriber, after: int, before: int | None
    ) -> AsyncIterator[list[Item]]:
        """Stored events after `after` (and before `before`), a page per short transaction,
        each read in one of the hub's replay slots; none once the stream is ending (revoked,
        its lifetime over, its client gone, the server stopping, or the database not
        answering), however long the log: the client resumes from what it has."""
        limit = min(REPLAY_FIRST_PAGE, REPLAY_PAGE)
        while True:
            if not await self._replay_slot(subscriber):
                return
            try:
                async with self.database.transaction(Tenant(self.organization_id)) as session:
                    rows = await self.hub.read_events(session, self.run_id, after, limit=limit)
            except (SQLAlchemyError, OSError) as exc:  # no connection came free, or it broke
                error = str(exc).split("\n")[0]
                log.warning("replaying run events failed", run_id=str(self.run_id), error=error)
                subscriber.end(UNREADABLE)
                return
            finally:
                self.hub.replay_slots.release()
            if subscriber.ending is not None:
                return
            page = [
                encode_event(row.seq, row.type, row.data)
                for row in rows
                if before is None or row.seq < before
            ]
            if page:
                yield page
                after = page[-1].seq
            if len(page) < limit:
                return
            size = sum(len(item.encoded) for item in page)
            limit = max(1, min(REPLAY_PAGE, limit * REPLAY_PAGE_BYTES // size))

    async def _replay_slot(self, subscriber: Subscriber) -> bool:
        """One of the hub's replay slots, taken; False, none taken, once the stream is ending
        (its client gone, the server stopping: looked at every second of the wait) or after
        REPLAY_SLOT_WAIT_SECONDS, when it ends for the client to come back: the streams ahead
        may each hold a slot for a pool timeout while the pool is exhausted. One request for
        the slot is kept the whole wait, so the stream keeps its place in the queue."""
        slots = self.hub.replay_slots
        taking = asyncio.ensure_future(slots.acquire())
        waited_until = time.monotonic() + REPLAY_SLOT_WAIT_SECONDS
        granted = False
        try:
            while not taking.done() and subscriber.ending is None:
                await asyncio.wait([taking], timeout=min(1.0, REPLAY_SLOT_WAIT_SECONDS))
                if not taking.done() and time.monotonic() >= waited_until:
                    subscriber.end(UNREADABLE)
            granted = taking.done() and not taking.cancelled() and subscriber.ending is None
            return granted
        finally:
            if not granted:  # (a slot given as the wait ended goes back)
                taking.cancel()
                taking.add_done_callback(partial(_give_back, slots))


def _give_back(slots: asyncio.Semaphore, taking: asyncio.Future[bool]) -> None:
    if not taking.cancelled():
        slots.release()


async def _watch_for_disconnect(receive: Receive, subscriber: Subscriber) -> None:
    """Ends the stream once its client leaves, or once its request cannot be read on (a body
    past the size limit): with nothing left to tell the client's leaving, the stream would
    hold its place among the organization's streams to its lifetime's end."""
    with contextlib.suppress(Exception):  # whatever stops the reading ends the stream
        while (await receive())["type"] != "http.disconnect":
            pass
    subscriber.end("disconnected")
