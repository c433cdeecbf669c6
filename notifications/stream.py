"""One subscriber's stream of a run: replay from the table after Last-Event-ID, then live.

The subscriber is registered with the hub before the replay reads the table, and every item
carries its seq: the replay and the live part overlap rather than leave a gap, and the overlap
is skipped by seq, so the client sees every event once, in order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from database.core import Database, set_tenant
from notifications import events
from notifications.hub import Dropped, Hub, Item, encode_event

REPLAY_PAGE = 500


@dataclass(frozen=True)
class StreamLimits:
    max_lifetime_seconds: float
    retry_ms: int


async def run_stream(
    database: Database,
    hub: Hub,
    *,
    run_id: uuid.UUID,
    organization_id: uuid.UUID,
    after: int,
    committed: int,
    limits: StreamLimits,
) -> AsyncIterator[bytes]:
    """`after`: the last seq the client has; `committed`: the run's last seq when checked."""
    deadline = time.monotonic() + limits.max_lifetime_seconds
    subscriber = hub.subscribe(run_id, organization_id, committed)
    sent = after
    try:
        yield f"retry: {limits.retry_ms}\n\n".encode()
        async for item in _replay(database, run_id, organization_id, sent, None):
            yield item.encoded
            sent = item.seq
            if item.type in events.TERMINAL_EVENTS:
                return
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                yield b": connection lifetime reached; reconnect with Last-Event-ID\n\n"
                return
            try:
                async with asyncio.timeout(remaining):
                    item = await subscriber.next()
            except TimeoutError:
                continue
            except Dropped:
                yield b": too far behind; reconnect with Last-Event-ID\n\n"
                return
            if item.seq == 0:  # a live delta: it carries the id of the last stored event
                yield f"id: {sent}\n".encode() + item.encoded
                continue
            if item.seq <= sent:
                continue  # already replayed
            if item.seq > sent + 1:  # defensive: fill any hole from the table
                async for missed in _replay(database, run_id, organization_id, sent, item.seq):
                    yield missed.encoded
                    sent = missed.seq
            yield item.encoded
            sent = item.seq
            if item.type in events.TERMINAL_EVENTS:
                return
    finally:
        hub.unsubscribe(subscriber)


async def _replay(
    database: Database,
    run_id: uuid.UUID,
    organization_id: uuid.UUID,
    after: int,
    before: int | None,
) -> AsyncIterator[Item]:
    """Stored events after `after` (and before `before`), a page per short transaction."""
    while True:
        async with database.transaction() as session:
            await set_tenant(session, organization_id=organization_id)
            rows = await events.events_after(session, run_id, after, limit=REPLAY_PAGE)
        for row in rows:
            if before is not None and row.seq >= before:
                return
            after = row.seq
            yield encode_event(row.seq, row.type, row.data)
        if len(rows) < REPLAY_PAGE:
            return
