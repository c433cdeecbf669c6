"""The threads that parse and compare imported cases, shared by every tenant's imports."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from utils.turns import Turns

# Parsing a large file (up to the import limit, each row bounded by io's limits) never holds
# the event loop; an organization uses one of these threads at a time (`off_loop`).
_IMPORT_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="import")
_IMPORT_TURNS: Turns[uuid.UUID] = Turns()
T = TypeVar("T")


async def off_loop(organization_id: uuid.UUID, parse: Callable[..., T], *args: Any) -> T:
    """Runs a parser of uploaded content in the import threads, once the organization's
    previous one there has ended: two threads busy with one organization's uploads would
    queue every other organization's imports behind them. The turn is held only while the
    parser waits for a thread or runs, never while a database lock is awaited, so a caller
    holding one (a sync holds its set's) cannot deadlock with the organization's imports."""
    async with _IMPORT_TURNS.turn(organization_id):
        running = _IMPORT_THREADS.submit(parse, *args)
        job = asyncio.wrap_future(running)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            running.cancel()  # when it has not started; else its turn lasts until it ends
            while not job.done():  # (however often it is cancelled meanwhile)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([job])
            raise
