"""The process's fan-out hub: run events to the SSE subscribers of this process.

Per run with subscribers, the hub keeps the last seq it has delivered. A NOTIFY (or the
periodic poll that covers lost ones, or a reconnect of the listener) makes it read the run's
newer events once, for all its subscribers, and offer each to every subscriber's bounded
buffer. A subscriber whose buffer is full is dropped: its stream ends and the client
reconnects with Last-Event-ID, so a slow reader never slows the run or the other readers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog

from database.core import Database, set_tenant
from notifications import events
from notifications.listener import Listener
from notifications.publisher import DELTAS_CHANNEL, EVENTS_CHANNEL

log = structlog.get_logger(__name__)

BUFFER = 1000  # items per subscriber
POLL_SECONDS = 2.0
FETCH_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Item:
    """A stored event (seq > 0) or a live delta (seq 0), encoded once for every subscriber."""

    seq: int
    type: str
    encoded: bytes


def encode_event(seq: int, kind: str, data: Any) -> Item:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return Item(seq, kind, f"id: {seq}\nevent: {kind}\ndata: {body}\n\n".encode())


def encode_delta(kind: str, data: Any) -> Item:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return Item(0, kind, f"event: {kind}\ndata: {body}\n\n".encode())


class Dropped(Exception):
    """The subscriber fell behind and was dropped: end the stream, the client reconnects."""


class Subscriber:
    __slots__ = ("_ready", "dropped", "items", "limit", "run_id")

    def __init__(self, run_id: uuid.UUID, limit: int) -> None:
        self.run_id = run_id
        self.limit = limit
        self.items: deque[Item] = deque()
        self.dropped = False
        self._ready = asyncio.Event()

    def offer(self, item: Item) -> bool:
        if len(self.items) >= self.limit:
            self.dropped = True
            self._ready.set()
            return False
        self.items.append(item)
        self._ready.set()
        return True

    async def next(self) -> Item:
        """The next item, waiting as long as needed (callers bound it with a timeout)."""
        while not self.items:
            if self.dropped:
                raise Dropped
            self._ready.clear()
            await self._ready.wait()
        return self.items.popleft()


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
        buffer: int = BUFFER,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.database = database
        self.buffer = buffer
        self.poll_seconds = poll_seconds
        self._feeds: dict[uuid.UUID, _Feed] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
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
        self._poller = asyncio.create_task(self._poll(), name="hub-poll")

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._poller] if self._poller else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._poller = None
        for feed in self._feeds.values():
            for subscriber in feed.subscribers:
                subscriber.dropped = True
                subscriber._ready.set()
        self._feeds.clear()

    def subscribe(self, run_id: uuid.UUID, organization_id: uuid.UUID, seen: int) -> Subscriber:
        """From now on, events of the run after `seen` (the last seq committed when the caller
        looked) reach the subscriber; the caller replays what came before from the table."""
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = self._feeds[run_id] = _Feed(organization_id, seen)
        subscriber = Subscriber(run_id, self.buffer)
        feed.subscribers.add(subscriber)
        if seen > feed.last_seq:
            self._fetch_soon(run_id, feed)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        feed = self._feeds.get(subscriber.run_id)
        if feed is None:
            return
        feed.subscribers.discard(subscriber)
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
            item = encode_delta(str(delta.pop("type", events.OUTPUT_DELTA)), delta)
            self._offer(feed, item)

    def _catch_up(self) -> None:
        for run_id, feed in list(self._feeds.items()):
            self._fetch_soon(run_id, feed)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            self._catch_up()

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
                async with self.database.transaction() as session:
                    await set_tenant(session, organization_id=feed.organization_id)
                    rows = await events.events_after(
                        session, run_id, feed.last_seq, limit=FETCH_LIMIT
                    )
                for row in rows:
                    feed.last_seq = row.seq
                    self._offer(feed, encode_event(row.seq, row.type, row.data))
                if len(rows) < FETCH_LIMIT and not feed.again:
                    break
        except Exception as exc:  # the next notification or poll tries again
            log.warning("reading run events failed", run_id=str(run_id), error=str(exc))
        finally:
            feed.fetching = False
            if not feed.subscribers and self._feeds.get(run_id) is feed:
                del self._feeds[run_id]

    def _offer(self, feed: _Feed, item: Item) -> None:
        for subscriber in list(feed.subscribers):
            if not subscriber.offer(item):
                feed.subscribers.discard(subscriber)
                log.info("slow stream subscriber dropped", run_id=str(subscriber.run_id))
