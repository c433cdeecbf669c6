"""Retention: the scheduled job that prunes what the service no longer needs.

`maintenance.prune` runs in the worker pool like any other job, and is a job of the reserved
system organization (`queue.SYSTEM_ORGANIZATION_ID`): no tenant's. Time is cut into slots of
`maintenance_interval_seconds` (on the database's clock, which every process shares); a slot
has at most one job, by idempotency key, so however many processes start, retry or reschedule
at once, each slot prunes once. A process with workers adds the current slot's job when it
starts; each occurrence adds the next slot's before it prunes, so a failing prune never breaks
the chain.

Pruning crosses organizations, so it goes through `assay_retention_prune`, a SECURITY DEFINER
function that deletes at most a batch of each kind per call: `batch` rows, except run events,
which go a whole run at a time (runs are added to the batch until their events reach `batch`
rows, so a live replay never finds part of a run's log). Each call is its own short
transaction (no prune holds its rows for minutes), and holds an advisory lock while it runs:
a process that finds the lock taken leaves the work to the one holding it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.engine.context import JobContext
from database.core import Database, Tenant
from tasks import queue
from utils.config import Settings
from utils.runtime import get_runtime

log = structlog.get_logger(__name__)

PRUNE_JOB = "maintenance.prune"
BATCH_ROWS = 5000
# Rounds of one batch per kind in one occurrence: what is left waits for the next occurrence.
MAX_ROUNDS = 100
MAX_ATTEMPTS = 3
# What the function prunes, and reports in rows removed, by category.
CATEGORIES = (
    "run_events",  # of runs that ended, a whole run at a time
    # Done jobs, and dead ones, each after its own period; never the chunk jobs of a run that
    # has not completed: resuming it rebuilds its work from them.
    "jobs",
    "dead_jobs",
    # Delivered or failed (never pending), after the finished jobs' period: no period of its own.
    "webhook_deliveries",
    "refresh_tokens",
    "auth_sessions",
    "invitations",
    "response_cache",  # answers fetched longer ago than the period
)
SYSTEM_TENANT = Tenant(queue.SYSTEM_ORGANIZATION_ID)

Transaction = Callable[[], AbstractAsyncContextManager[AsyncSession]]

_PRUNE = text(
    "SELECT category, pruned FROM assay_retention_prune(:run_events_days, :jobs_days,"
    " :dead_jobs_days, :sessions_days, :invitations_days, :batch, :response_cache_days)"
)


@dataclass(frozen=True)
class RetentionPolicy:
    """Days each kind is kept after it ended; None keeps it forever."""

    run_events_days: int | None = None
    jobs_days: int | None = None  # done jobs, and the webhook delivery log
    dead_jobs_days: int | None = None
    sessions_days: int | None = None
    invitations_days: int | None = None
    response_cache_days: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            run_events_days=settings.retention_run_events_days,
            jobs_days=settings.retention_jobs_days,
            dead_jobs_days=settings.retention_dead_jobs_days,
            sessions_days=settings.retention_sessions_days,
            invitations_days=settings.retention_invitations_days,
            response_cache_days=settings.retention_response_cache_days,
        )


@dataclass
class PruneReport:
    pruned: dict[str, int] = field(default_factory=dict)  # rows removed, by category
    rounds: int = 0
    # Another process held the lock: it prunes (from the start, when no round ran here).
    held_elsewhere: bool = False

    @property
    def skipped(self) -> bool:
        return self.held_elsewhere and self.rounds == 0


async def prune_batch(
    session: AsyncSession, policy: RetentionPolicy, *, batch: int = BATCH_ROWS
) -> dict[str, int] | None:
    """One batch of each kind, in the session's transaction (which holds the pruning lock until
    it ends); None when another transaction holds the lock."""
    rows = await session.execute(
        _PRUNE,
        {
            "run_events_days": policy.run_events_days,
            "jobs_days": policy.jobs_days,
            "dead_jobs_days": policy.dead_jobs_days,
            "sessions_days": policy.sessions_days,
            "invitations_days": policy.invitations_days,
            "response_cache_days": policy.response_cache_days,
            "batch": batch,
        },
    )
    counts = {category: int(pruned) for category, pruned in rows.all()}
    return counts or None


async def prune(
    transaction: Transaction,
    policy: RetentionPolicy,
    *,
    batch: int = BATCH_ROWS,
    max_rounds: int = MAX_ROUNDS,
) -> PruneReport:
    """Batches, each in a transaction of its own, until no kind fills one (or `max_rounds`).
    A kind that removed `batch` rows (or more) may have more; one that removed fewer has none
    left (run events too: their batch ends short of `batch` rows only when no run is left)."""
    report = PruneReport()
    for _ in range(max_rounds):
        async with transaction() as session:
            counts = await prune_batch(session, policy, batch=batch)
        if counts is None:
            report.held_elsewhere = True
            break
        report.rounds += 1
        for category, pruned in counts.items():
            report.pruned[category] = report.pruned.get(category, 0) + pruned
        if max(counts.values(), default=0) < batch:
            break
    if report.skipped:
        log.info("retention: another process is pruning; skipped")
    else:
        log.info(
            "retention pruned",
            rounds=report.rounds,
            stopped_for_another_process=report.held_elsewhere,
            **{category: report.pruned.get(category, 0) for category in CATEGORIES},
        )
    return report


async def schedule(
    session: AsyncSession, interval_seconds: float, *, slots_ahead: int
) -> uuid.UUID | None:
    """Adds the prune job of the slot `slots_ahead` after the current one, to run when that slot
    begins (the current slot's: at once). None when the slot has its job already. The session
    acts for the system organization."""
    now = float((await session.execute(select(func.extract("epoch", func.now())))).scalar_one())
    slot = math.floor(now / interval_seconds) + slots_ahead
    return await queue.enqueue(
        session,
        organization_id=queue.SYSTEM_ORGANIZATION_ID,
        kind=PRUNE_JOB,
        payload={"slot": slot},
        idempotency_key=f"{PRUNE_JOB}:{interval_seconds:g}s:{slot}",
        max_attempts=MAX_ATTEMPTS,
        delay=timedelta(seconds=max(0.0, slot * interval_seconds - now)),
    )


async def ensure_scheduled(database: Database, interval_seconds: float) -> None:
    """At the start of a process with workers: the current slot's job, unless it has one. A
    failure is logged, not raised: serving matters more than this slot's pruning."""
    try:
        async with database.transaction(SYSTEM_TENANT) as session:
            added = await schedule(session, interval_seconds, slots_ahead=0)
    except Exception as exc:
        log.error("scheduling the maintenance job failed", error=str(exc))
        return
    if added is not None:
        log.info("maintenance job scheduled", job_id=str(added))


async def run_prune(ctx: JobContext) -> None:
    """The `maintenance.prune` handler: the next occurrence first (committed on its own), then
    the pruning under the settings' retention periods."""
    settings = get_runtime().settings
    async with ctx.transaction() as session:
        await schedule(session, settings.maintenance_interval_seconds, slots_ahead=1)
    await prune(ctx.transaction, RetentionPolicy.from_settings(settings))
