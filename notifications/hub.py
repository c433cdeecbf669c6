"""The process's fan-out hub: run events to the SSE subscribers of this process.

Per run with subscribers, the hub keeps the last seq it has delivered. A NOTIFY (or the
periodic poll that covers lost ones, or a reconnect of the listener) makes it read the run's
newer events once, for all its subscribers, and encode them once as one batch of SSE bytes.
A stream that is live and idle (caught up, nothing buffered, no send in progress) gets the
batch written there and then, from the hub's own loop: one write per stream per batch, with
no task woken. Any other stream gets the batch's items in its bounded buffer, which its own
task drains. A subscriber whose buffer is full is dropped: its stream ends and the client
reconnects with Last-Event-ID, so a slow reader never slows the run or the other readers.
The hub's clock also keeps every stream's heartbeat, lifetime and send timeout (each stream's
`Subscriber`, notifications/subscriber.py), has the credentials of the open streams checked
again (notifications/recheck.py), and ends the streams of runs deleted
(notifications/gone_runs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from database.core import Database, Tenant
from notifications.admission import OpenStreams
from notifications.frames import Batch, encode_delta, encode_event
from notifications.gone_runs import GoneRunCheck, RunsPresent
from notifications.listener import Listener
from notifications.publisher import DELTAS_CHANNEL, EVENTS_CHANNEL
from notifications.recheck import Credential, CredentialRecheck
from notifications.subscriber import (
    SHUTDOWN,
    StreamLimits,
    Subscriber,
)
from utils.metrics import metrics

log = structlog.get_logger(__name__)

BUFFER = 1000  # items per subscriber
POLL_SECONDS = 2.0
TICK_SECONDS = 0.25
FETCH_LIMIT = 500
REPLAY_READS = 4


class StoredEvent(Protocol):
    seq: int
    type: str
    data: Any


class EventReader(Protocol):
    """Reads a run's stored events after a seq, in order: the runs entity's log, handed to the
    hub (and its streams) by the process that builds them."""

    def __call__(
        self, session: AsyncSession, run_id: uuid.UUID, after: int, *, limit: int
    ) -> Awaitable[Sequence[StoredEvent]]: ...


@dataclass(eq=False)
class _Feed:
    organization_id: uuid.UUID
    last_seq: int
    subscribers: set[Subscriber] = field(default_factory=set)
    fetching: bool = False
    again: bool = False


class Hub:
    def __init__(
        self,
        database: Database,
        listener: Listener,
        *,
        read_events: EventReader,
        present_runs: RunsPresent | None = None,
        buffer: int = BUFFER,
        poll_seconds: float = POLL_SECONDS,
        tick_seconds: float = TICK_SECONDS,
        replay_reads: int = REPLAY_READS,
    ) -> None:
        """`replay_reads`: how many of the streams' replays may read the database at once (the
        rest wait their turn): however many streams open, they hold no more of the pool, and
        the requests beside them, every tenant's, still find connections free."""
        self.database = database
        self.read_events = read_events
        self.buffer = buffer
        self.poll_seconds = poll_seconds
        self.tick_seconds = tick_seconds
        self._feeds: dict[uuid.UUID, _Feed] = {}
        self.replay_slots = asyncio.Semaphore(replay_reads)
        self.closing: str | None = None  # why every stream ends, once the server stops
        self.open_streams = OpenStreams()
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._clock: asyncio.Task[None] | None = None
        self.recheck = CredentialRecheck(database)
        self.gone_runs = GoneRunCheck(database, present_runs) if present_runs else None
        listener.on(EVENTS_CHANNEL, self._on_events)
        listener.on(DELTAS_CHANNEL, self._on_deltas)
        listener.on_reconnect(self._catch_up)

    @property
    def subscriber_count(self) -> int:
        return sum(len(feed.subscribers) for feed in self._feeds.values())

    @property
    def run_count(self) -> int:
        return len(self._feeds)

    async def start(self) -> None:
        self.closing = None
        self._poller = asyncio.create_task(self._poll(), name="hub-poll")
        self._clock = asyncio.create_task(self._tick(), name="hub-clock")

    async def stop(self) -> None:
        daemons = [task for task in (self._poller, self._clock) if task is not None]
        tasks = [*self._tasks, *daemons]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.recheck.stop()
        if self.gone_runs is not None:
            await self.gone_runs.stop()
        self._poller = self._clock = None
        self.end_all(SHUTDOWN)
        metrics().sse_subscribers.dec(self.subscriber_count)
        self._feeds.clear()
        self.open_streams.clear()

    def subscribe(
        self,
        run_id: uuid.UUID,
        organization_id: uuid.UUID,
        seen: int,
        limits: StreamLimits,
        credential: Credential | None = None,
    ) -> Subscriber:
        """From now on, events of the run after `seen` (the last seq committed when the caller
        looked) reach the subscriber; the caller replays what came before from the table.
        With a `credential`, the stream ends once that is no longer good."""
        self.open_streams.admit(
            organization_id,
            per_organization=limits.max_streams_per_organization,
            in_all=limits.max_streams,
        )
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = self._feeds[run_id] = _Feed(organization_id, seen)
        subscriber = Subscriber(run_id, self.buffer, limits, credential)
        if self.closing is not None:  # opened as the server stops: it ends at once, saying so
            subscriber.end(self.closing)
        # What the hub has already delivered to others, this one gets from the replay.
        subscriber.known = max(seen, feed.last_seq)
        feed.subscribers.add(subscriber)
        metrics().sse_subscribers.inc()
        if seen > feed.last_seq:
            self._fetch_soon(run_id, feed)
        return subscriber

    def end_all(self, reason: str) -> None:
        """Ends every stream (after what is buffered), and those opened from now on: the
        server is going away."""
        self.closing = reason
        for feed in self._feeds.values():
            for subscriber in feed.subscribers:
                subscriber.end(reason)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        feed = self._feeds.get(subscriber.run_id)
        if feed is None or subscriber not in feed.subscribers:
            return
        feed.subscribers.discard(subscriber)
        self.open_streams.close(feed.organization_id)
        metrics().sse_subscribers.dec()
        if not feed.subscribers and not feed.fetching:
            del self._feeds[subscriber.run_id]

    # --- notifications ------------------------------------------------------------------

    def _on_events(self, payload: str) -> None:
        with contextlib.suppress(ValueError):
            run_id = uuid.UUID(payload)
            feed = self._feeds.get(run_id)
            if feed is not None:
                self._fetch_soon(run_id, feed)

    def _on_deltas(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            feed = self._feeds.get(uuid.UUID(message["run"]))
        except (ValueError, KeyError, TypeError):
            return
        if feed is None:
            return
        for delta in message.get("events", ()):
            kind = delta.pop("type", None)
            if isinstance(kind, str):
                self._deliver(feed, Batch.of_delta(encode_delta(kind, delta), feed.last_seq))

    def _catch_up(self) -> None:
        for run_id, feed in list(self._feeds.items()):
            self._fetch_soon(run_id, feed)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            self._catch_up()

    async def _tick(self) -> None:
        """One clock for every stream: heartbeats, lifetimes, hung sends, credentials and runs
        deleted."""
        while True:
            await asyncio.sleep(self.tick_seconds)
            now = time.monotonic()
            for feed in list(self._feeds.values()):
                for subscriber in list(feed.subscribers):
                    subscriber.tick(now)
            self.recheck.tick((s for f in self._feeds.values() for s in f.subscribers), now)
            if self.gone_runs is not None:
                watched = (
                    (r, f.organization_id, list(f.subscribers)) for r, f in self._feeds.items()
                )
                self.gone_runs.tick(watched, now)

    # --- reading and fan-out ------------------------------------------------------------

    def _fetch_soon(self, run_id: uuid.UUID, feed: _Feed) -> None:
        if feed.fetching:
            feed.again = True
            return
        feed.fetching = True
        task = asyncio.create_task(self._fetch(run_id, feed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, run_id: uuid.UUID, feed: _Feed) -> None:
        try:
            while True:
                feed.again = False
                async with self.database.transaction(Tenant(feed.organization_id)) as session:
                    rows = await self.read_events(session, run_id, feed.last_seq, limit=FETCH_LIMIT)
                if rows:
                    batch = Batch.of_events([encode_event(r.seq, r.type, r.data) for r in rows])
                    feed.last_seq = batch.last
                    self._deliver(feed, batch)
                if len(rows) < FETCH_LIMIT and not feed.again:
                    break
        except Exception as exc:  # the next notification or poll tries again
            log.warning("reading run events failed", run_id=str(run_id), error=str(exc))
        finally:
            feed.fetching = False
            if not feed.subscribers and self._feeds.get(run_id) is feed:
                del self._feeds[run_id]

    def _deliver(self, feed: _Feed, batch: Batch) -> None:
        # An ended subscriber stays in the feed until its stream unsubscribes: the clock must
        # still see it (a send that hangs is only given up by the clock).
        now = time.monotonic()
        for subscriber in feed.subscribers:
            if subscriber.ending is None and not subscriber.deliver(batch, now):
                log.info("slow stream subscriber dropped", run_id=str(subscriber.run_id))
