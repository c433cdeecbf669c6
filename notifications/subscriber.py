"""One stream's side of the hub: its buffer, its clock (heartbeat, lifetime, a send that
hangs), and the reasons a stream ends (notifications/hub.py drives them)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from notifications.frames import HEARTBEAT, Batch, Item
from notifications.recheck import Credential
from utils.metrics import metrics

log = structlog.get_logger(__name__)


class StreamEnd(Exception):
    """The stream must end: `reason` is a comment for the client, which then reconnects."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


TOO_SLOW = "too far behind; reconnect with Last-Event-ID"
LIFETIME = "connection lifetime reached; reconnect with Last-Event-ID"
SEND_TIMEOUT = "send timeout"
SHUTDOWN = "the server is shutting down; reconnect with Last-Event-ID"
UNREADABLE = "the run's events could not be read now; reconnect with Last-Event-ID"


@dataclass(frozen=True, slots=True)
class StreamLimits:
    heartbeat_seconds: float
    send_timeout_seconds: float
    max_lifetime_seconds: float
    # Streams open at once on this process (None: no bound), per organization and in all.
    max_streams_per_organization: int | None = None
    max_streams: int | None = None


# Writes a frame to the stream's client now, from outside the stream's task (see Subscriber).
WriteNow = Callable[[bytes], None]


class Subscriber:
    """One stream's buffer and clock. Small on purpose (thousands are open at once): a list
    and one future instead of a deque and an Event, and no timer of its own: the hub's clock
    adds heartbeats, ends streams at their lifetime, and aborts sends that hang.

    Once its stream is live it sets `write_now` and `terminal`: while its task waits with
    nothing buffered, what the hub delivers is written at once through `write_now` (a send
    that would wait is handed back as `pending`, and the task finishes it). Batches with a
    terminal event, and anything that does not follow `sent`, take the buffer: the task decides
    there where the stream ends or fills a gap."""

    __slots__ = (
        "_waiter",
        "credential",
        "deadline",
        "ending",
        "items",
        "known",
        "last_write",
        "limit",
        "limits",
        "pending",
        "run_id",
        "sending_since",
        "sent",
        "task",
        "terminal",
        "write_now",
    )

    def __init__(
        self, run_id: uuid.UUID, limit: int, limits: StreamLimits, credential: Credential | None
    ) -> None:
        now = time.monotonic()
        self.run_id = run_id
        self.limit = limit
        self.limits = limits
        self.credential = credential
        self.items: list[Item] = []
        self.known = 0  # the last seq committed when subscribing: the replay covers up to it
        self.ending: str | None = None
        self.deadline = now + limits.max_lifetime_seconds
        self.last_write = now
        self.sending_since = 0.0
        self.task: asyncio.Task[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.sent = 0  # the last stored seq the stream has sent (kept by the stream)
        self.write_now: WriteNow | None = None
        self.terminal: frozenset[str] = frozenset()
        self.pending: Any = None  # a send begun by write_now that has to wait

    def _idle(self) -> bool:
        """The stream's task is parked waiting for items, with none buffered and no send
        in progress: the hub may write for it."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and self.pending is None

    def deliver(self, batch: Batch, now: float) -> bool:
        """Writes the batch if the stream is idle and at `batch.after`, else buffers its items;
        False if the subscriber has ended (or is dropped now)."""
        if self.ending is not None:
            return False
        write = self.write_now
        if (
            write is not None
            and self.sent == batch.after
            and self._idle()
            and self.terminal.isdisjoint(batch.kinds)
            and len(batch.items) <= self.limit  # more than it may hold drops it, as buffered
        ):
            self.sent = batch.last
            self.last_write = now
            write(batch.frame)
            return True
        return all(self.offer(item) for item in batch.items)

    def hand_over(self, pending: Any) -> None:
        """A send begun outside the task has to wait (the client reads slowly): the task
        finishes it before anything else."""
        self.pending = pending
        self._wake()

    def offer(self, item: Item) -> bool:
        if self.ending is not None:
            return False
        write = self.write_now
        if item.seq == -1 and write is not None and self._idle():
            write(item.encoded)  # a heartbeat: no seq to keep
            return True
        if len(self.items) >= self.limit:
            self.end(TOO_SLOW)
            metrics().sse_dropped.inc()
            return False
        self.items.append(item)
        self._wake()
        return True

    def end(self, reason: str) -> None:
        """The stream ends once what is buffered has been sent."""
        if self.ending is None:
            self.ending = reason
        self._wake()

    def revoke(self, reason: str) -> None:
        """What authorised the stream no longer does: it ends without what is buffered."""
        self.items.clear()
        self.end(reason)

    async def next_batch(self) -> list[Item]:
        """Everything buffered (waiting for something if nothing is, and no `pending` send is
        handed over); StreamEnd once ended."""
        while not self.items and self.pending is None:
            if self.ending is not None:
                raise StreamEnd(self.ending)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        batch, self.items = self.items, []
        return batch

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def tick(self, now: float) -> None:
        if self.sending_since and now - self.sending_since > self.limits.send_timeout_seconds:
            if self.task is not None and self.ending != SEND_TIMEOUT:
                self.ending = SEND_TIMEOUT  # the client takes nothing: give up on it
                self.task.cancel()
            return
        if now >= self.deadline:
            self.end(LIFETIME)
        elif now - self.last_write >= self.limits.heartbeat_seconds and not self.items:
            self.last_write = now
            self.offer(HEARTBEAT)
