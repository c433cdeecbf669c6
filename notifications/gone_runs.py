"""Streams of a run deleted while they are open end within a bounded time.

Deleting a run (or its project, or its organization) deletes its events with it, so a stream
of it would read nothing more and send heartbeats to its lifetime's end, holding its slot, and
the hub would read its events every poll. Every `CHECK_SECONDS` the hub's clock asks which of
its watched runs still exist, one short transaction per organization (the runs under its own
row-level security), and ends the streams of those gone, with the reason.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Iterable, Sequence
from typing import Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from database.core import Database, Tenant
from notifications.rounds import Rounds

log = structlog.get_logger(__name__)

CHECK_SECONDS = 30.0
GONE = "the run was deleted"


class RunsPresent(Protocol):
    """Of `run_ids`, those that exist (in the transaction's organization): the runs entity's,
    handed to the hub by the process that builds it."""

    def __call__(
        self, session: AsyncSession, run_ids: Sequence[uuid.UUID]
    ) -> Awaitable[set[uuid.UUID]]: ...


class Watched(Protocol):
    """An open stream as this check sees it (notifications.hub.Subscriber)."""

    def revoke(self, reason: str) -> None: ...


# A watched run: its id, its organization, and its open streams.
WatchedRun = tuple[uuid.UUID, uuid.UUID, Sequence[Watched]]


class GoneRunCheck:
    """Driven by the hub's clock: one round at a time, `every` seconds apart."""

    def __init__(self, database: Database, present: RunsPresent, every: float = CHECK_SECONDS):
        self.database = database
        self.present = present
        self.every = every
        self.rounds = Rounds()

    def tick(self, runs: Iterable[WatchedRun], now: float) -> asyncio.Task[None] | None:
        """Starts a round if one is due and a run is watched: the round, if so."""
        if not self.rounds.due(now):
            return None
        by_organization: dict[uuid.UUID, dict[uuid.UUID, Sequence[Watched]]] = {}
        for run_id, organization_id, streams in runs:
            if streams:
                by_organization.setdefault(organization_id, {})[run_id] = streams
        if not by_organization:
            return None
        return self.rounds.start(
            self._check(by_organization), now, self.every, name="stream-run-check"
        )

    async def stop(self) -> None:
        await self.rounds.stop()

    async def _check(
        self, by_organization: dict[uuid.UUID, dict[uuid.UUID, Sequence[Watched]]]
    ) -> None:
        for organization_id, streams_of in by_organization.items():
            try:
                async with self.database.transaction(Tenant(organization_id)) as session:
                    present = await self.present(session, list(streams_of))
            except Exception as exc:  # the streams stay open: the next round asks again
                log.warning("checking watched runs failed", runs=len(streams_of), error=str(exc))
                continue
            for run_id, streams in streams_of.items():
                if run_id not in present:
                    for stream in streams:
                        stream.revoke(GONE)
                    log.info("streams of a deleted run ended", run_id=str(run_id))
