"""Pacing calls to a model: requests-per-minute as evenly spaced slots (no bursts).

`SharedPace` holds the limit across every process on the database: each call takes the next
free slot of the model's schedule with one atomic statement (`assay_provider_slot`, see the
0013_provider_pacing migration), on a connection of the process's pool in autocommit mode, and
sleeps until that slot with no connection or transaction held. One short statement per
provider call costs far less than the call itself, so the schedule stays in PostgreSQL even
when `ASSAY_REDIS_URL` is set: every process that calls providers already has the database,
and one place for the schedule keeps its spacing exact.

When the database cannot take the slot (restarting, unreachable within a few seconds), the
process paces that model alone with a local `Pace` rather than failing the call, and asks the
database again after a while: a provider sees at most the limit per process meanwhile.

A call that wakes well after its slot (a busy event loop, a starved process) would reach the
provider beside the next slot's call: past half an interval (and at least LATE_FLOOR_SECONDS)
it takes a new slot instead, once: a process starved twice in a row still sends, late, rather
than not at all.

In a process, a model's calls wait their turn before taking a slot: together they hold at
most AHEAD_SECONDS of slots ahead (one slot at least), so calls that are cancelled (a run
cancelled, stopped, or its lease lost) leave no more than that behind for later calls to wait
out. Several turns at a high rate let the database's round trips overlap, as they must for
the schedule's pace to hold when a round trip is longer than an interval.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from database.core import Database, get_database

log = structlog.get_logger(__name__)

TAKE_SLOT = text("SELECT assay_provider_slot(:model, :per_minute)")
# Taking a slot is one short statement; past this the database is not answering.
SLOT_TIMEOUT_SECONDS = 5.0
# After a failure, how long the process paces alone before asking the database again (so a
# hanging database costs one timeout now and then, not one per call).
SHARED_RETRY_SECONDS = 10.0
# Waking later than this share of an interval after its slot, a call takes a new slot; never
# for less than LATE_FLOOR_SECONDS (at a high rate, a busy loop's usual lag would otherwise
# make most calls take two slots, and the schedule run at half the limit).
LATE_SHARE = 0.5
LATE_FLOOR_SECONDS = 0.05
AHEAD_SECONDS = 0.1


def _turns(interval: float) -> asyncio.Semaphore:
    """The calls that may hold a slot ahead at once: AHEAD_SECONDS of them, one at least."""
    return asyncio.Semaphore(max(1, math.ceil(AHEAD_SECONDS / interval)))


class Pacer(Protocol):
    interval: float

    async def wait(self) -> None: ...


class Pace:
    """Spaces this process's calls evenly to stay under a requests-per-minute limit."""

    def __init__(self, per_minute: int) -> None:
        self.interval = 60.0 / per_minute
        self._next = 0.0
        self._lock = asyncio.Lock()
        self._turns = _turns(self.interval)

    async def wait(self) -> None:
        async with self._turns:
            await keep_to_a_slot(self.take_slot, self.interval)

    async def take_slot(self) -> float:
        """Takes this process's next free slot; returns the seconds until it comes."""
        async with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval
        return slot - now


async def keep_to_a_slot(take_slot: Callable[[], Awaitable[float]], interval: float) -> None:
    """Sleeps until a slot taken from `take_slot`; a second slot when the first was overslept.

    The slot is reckoned from when it was asked for: a loop that stalls while the answer comes
    back makes the call late as surely as one that stalls in its sleep."""
    late_after = max(interval * LATE_SHARE, LATE_FLOOR_SECONDS)
    for _ in range(2):
        asked = time.monotonic()
        delay = await take_slot()
        if delay > 0:
            await asyncio.sleep(delay)
        if time.monotonic() - (asked + delay) <= late_after:
            return


def _process_database() -> Database | None:
    try:
        return get_database()
    except RuntimeError:  # a process with no database (a tool, a unit test) has no peers
        return None


class SharedPace:
    """Spaces the calls of every process sharing the database to one model configuration."""

    def __init__(self, model_id: uuid.UUID, per_minute: int) -> None:
        self.model_id = model_id
        self.per_minute = per_minute
        self.interval = 60.0 / per_minute
        self._local = Pace(per_minute)
        self._degraded = False
        self._retry_at = 0.0
        self._turns = _turns(self.interval)

    async def wait(self) -> None:
        async with self._turns:
            await keep_to_a_slot(self._next_slot, self.interval)

    async def _next_slot(self) -> float:
        """The seconds until this call's slot: on the shared schedule when the database
        answers, else on this process's own."""
        database = _process_database()
        if database is None or time.monotonic() < self._retry_at:
            return await self._local.take_slot()
        try:
            async with asyncio.timeout(SLOT_TIMEOUT_SECONDS):
                delay = await self.take_slot(database)
        except (SQLAlchemyError, OSError) as exc:  # TimeoutError is an OSError
            if not self._degraded:
                log.warning(
                    "provider pacing falls back to this process alone",
                    model_config_id=str(self.model_id),
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
                self._degraded = True
            self._retry_at = time.monotonic() + SHARED_RETRY_SECONDS
            return await self._local.take_slot()
        if self._degraded:
            log.info("provider pacing is shared again", model_config_id=str(self.model_id))
            self._degraded = False
        return delay

    async def take_slot(self, database: Database) -> float:
        """Takes the model's next free slot; returns the seconds until it comes."""
        async with database.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            delay = await connection.scalar(
                TAKE_SLOT, {"model": self.model_id, "per_minute": self.per_minute}
            )
        return float(delay)
