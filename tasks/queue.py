"""The durable job queue in PostgreSQL.

- Enqueue inside the caller's transaction: a job exists only if the caller's data does.
- Workers claim batches with FOR UPDATE SKIP LOCKED (through a SECURITY DEFINER function, as
  claiming looks across organizations) and hold a lease they renew by heartbeat; an expired
  lease makes the job claimable again (its worker died): a takeover, counted apart from the
  attempts (a process that dies is no failure of the work), with a cap of its own.
- Failures retry with exponential backoff and jitter; after the last attempt a job is `dead`
  with its last error. NOTIFY carries ids only and only wakes workers.
"""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Table, Text, TextClause, any_, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from tasks.models import Job
from utils.crud import json_rows, recordset_insert
from utils.ids import new_id

CHANNEL = "assay_jobs"
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 300.0
JOBS: Table = Job.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class ClaimedJob:
    id: uuid.UUID
    organization_id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    attempts: int  # runs whose handler raised, and this one
    max_attempts: int
    takeovers: int = 0  # times taken over from a process that died holding it
    max_takeovers: int = 20

    @property
    def exhausted(self) -> str | None:
        """Why the job is given up before it runs, if it is."""
        if self.attempts > self.max_attempts:
            return f"gave up after {self.max_attempts} attempts"
        if self.takeovers > self.max_takeovers:
            return f"gave up: the processes running it died {self.takeovers} times"
        return None


async def enqueue(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    kind: str,
    payload: dict[str, Any],
    idempotency_key: str | None = None,
    max_attempts: int = 5,
    delay: timedelta | None = None,
) -> uuid.UUID | None:
    """Adds a job in the caller's transaction; None when the idempotency key was used before."""
    added = await enqueue_many(
        session,
        organization_id=organization_id,
        kind=kind,
        jobs=[(payload, idempotency_key)],
        max_attempts=max_attempts,
        delay=delay,
    )
    return added[0] if added else None


async def enqueue_many(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    kind: str,
    jobs: Sequence[tuple[dict[str, Any], str | None]],
    max_attempts: int = 5,
    delay: timedelta | None = None,
) -> list[uuid.UUID]:
    """Adds jobs of one kind, given as (payload, idempotency key), in the caller's transaction
    and in one statement, and wakes the workers once (each process's pool claims on, job after
    job, while it has room). Returns the ids of the jobs added (a used key adds none)."""
    if not jobs:
        return []
    rows = [
        {
            "id": new_id(),
            "organization_id": organization_id,
            "kind": kind,
            "payload": payload,
            "status": "queued",
            "idempotency_key": key,
            "attempts": 0,
            "max_attempts": max_attempts,
        }
        for payload, key in jobs
    ]
    delayed = {"delay": delay} if delay is not None else {}
    inserted = await session.execute(_insert_jobs(delayed=bool(delayed)), json_rows(rows) | delayed)
    ids = list(inserted.scalars().all())
    if ids:
        await _wake_workers(session, ids[0])
    return ids


@functools.cache
def _insert_jobs(*, delayed: bool) -> TextClause:
    """One statement for any number of jobs, prepared once (a multi-row VALUES is built and
    checked value by value on every call)."""
    return recordset_insert(
        JOBS,
        [
            *("id", "organization_id", "kind", "payload", "status", "idempotency_key"),
            *("attempts", "max_attempts"),
        ],
        "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        computed={"run_after": "now() + CAST(:delay AS INTERVAL)"} if delayed else None,
    )


async def _wake_workers(session: AsyncSession, job_id: uuid.UUID) -> None:
    # Delivered at commit, and only then: a rolled-back enqueue wakes no one.
    await session.execute(
        text("SELECT pg_notify(:channel, :id)"), {"channel": CHANNEL, "id": str(job_id)}
    )


async def claim(
    session: AsyncSession,
    *,
    worker: str,
    limit: int,
    lease: timedelta,
    skip_kinds: Sequence[str] = (),
    per_organization: Mapping[str, int] | None = None,
) -> list[ClaimedJob]:
    """Up to `limit` jobs due, oldest first, none of `skip_kinds`; of the kinds in
    `per_organization`, none of an organization that has its number of them under way (one
    cap for them all: the least given)."""
    capped = per_organization or {}
    rows = await session.execute(
        text(
            "SELECT id, organization_id, kind, payload, attempts, max_attempts, takeovers,"
            " max_takeovers FROM assay_queue_claim(:worker, :limit, :lease,"
            " CAST(:skip AS text[]), CAST(:capped AS text[]), :per_organization)"
        ),
        {
            "worker": worker,
            "limit": limit,
            "lease": lease.total_seconds(),
            "skip": list(skip_kinds),
            "capped": sorted(capped),
            "per_organization": min(capped.values(), default=0),
        },
    )
    return [ClaimedJob(*row) for row in rows.all()]


async def heartbeat(
    session: AsyncSession, *, worker: str, job_ids: list[uuid.UUID], lease: timedelta
) -> set[uuid.UUID]:
    """Extends the leases still held; returns their ids (a missing id was lost)."""
    rows = await session.execute(
        text("SELECT assay_queue_heartbeat(:worker, :ids, :lease)"),
        {"worker": worker, "ids": job_ids, "lease": lease.total_seconds()},
    )
    return {row[0] for row in rows.all() if row[0] is not None}


async def release(session: AsyncSession, *, worker: str, job_ids: list[uuid.UUID]) -> None:
    """Hands unfinished jobs back (at shutdown, or a handler's `HandBack`), so another worker
    starts them at once; each gives back what its claim counted, an attempt or a takeover."""
    await session.execute(
        text("SELECT assay_queue_release(:worker, :ids)"), {"worker": worker, "ids": job_ids}
    )


async def others_waiting(
    session: AsyncSession, *, organization_id: uuid.UUID, waited: float, kinds: Sequence[str]
) -> bool:
    """Whether a job of `kinds` of another organization, one with fewer jobs under way than
    this one less one (or with none, while this one holds the most), has been due and
    unclaimed for `waited` seconds (its turn is first, and every worker is busy)."""
    return bool(
        await session.scalar(
            text("SELECT assay_queue_others_waiting(:organization, :waited, :kinds)"),
            {"organization": organization_id, "waited": waited, "kinds": list(kinds)},
        )
    )


async def hold_unfinished(session: AsyncSession, *, kind: str, key: str, value: str) -> list[str]:
    """The statuses of the unfinished jobs of `kind` whose payload's `key` is `value`, each
    held to the end of the transaction (a worker's claim skips it meanwhile)."""
    rows = await session.scalars(
        select(Job.status)
        .where(
            Job.kind == kind,
            Job.status.in_(("queued", "running")),
            Job.payload[key].astext == value,
        )
        .with_for_update()
    )
    return list(rows.all())


async def withdraw(session: AsyncSession, *, kind: str, key: str, values: Sequence[str]) -> None:
    """The queued jobs of `kind` whose payload's `key` is one of `values` are done, unrun:
    their work was called off. (A running one finishes its run.)"""
    if values:
        await session.execute(
            update(Job)
            .where(
                Job.kind == kind,
                Job.status == "queued",
                # One array, however many (a list would be a parameter each: at most 32,767).
                Job.payload[key].astext == any_(bindparam("values", list(values), ARRAY(Text))),
            )
            .values(status="done", finished_at=func.now(), last_error="withdrawn")
        )


async def complete(session: AsyncSession, *, worker: str, job_id: uuid.UUID) -> None:
    await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.locked_by == worker)
        .values(status="done", locked_by=None, locked_until=None, finished_at=func.now())
    )


class HandBack(Exception):
    """Raised by a handler that stops early so that other work goes first: its job is queued
    again at once, this attempt not counted (as at a shutdown)."""


class RetryLater(Exception):
    """Raised by a handler whose job should be tried again after `seconds` (its own schedule)
    rather than the queue's backoff; the last attempt still makes the job dead."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


def backoff(attempts: int) -> float:
    """Seconds before the next attempt: exponential, capped, with jitter against herds."""
    exponent = min(max(0, attempts - 1), 64)  # 2**1025 would overflow a float
    ideal = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2**exponent)
    return ideal * random.uniform(0.5, 1.5)


async def fail(
    session: AsyncSession,
    *,
    worker: str,
    job: ClaimedJob,
    error: str,
    retry_in: float | None = None,
) -> str:
    """Schedules a retry (after `retry_in` seconds, else the backoff), or parks the job as dead
    after its last attempt. Returns the status, or "lost" when `worker` no longer holds the job
    (its lease ran out and another took it)."""
    dead = job.attempts >= job.max_attempts or job.exhausted is not None
    values: dict[str, Any] = {
        "locked_by": None,
        "locked_until": None,
        "last_error": error[:4000],
        "status": "dead" if dead else "queued",
    }
    if dead:
        values["finished_at"] = func.now()
    else:
        delay = backoff(job.attempts) if retry_in is None else retry_in
        values["run_after"] = func.now() + timedelta(seconds=delay)
    updated = await session.execute(
        update(Job)
        .where(Job.id == job.id, Job.locked_by == worker)
        .values(**values)
        .returning(Job.id)
    )
    if updated.first() is None:
        return "lost"
    return values["status"]


async def payloads(
    session: AsyncSession, kind: str, key_prefix: str
) -> list[tuple[str, dict[str, Any]]]:
    """(status, payload) of the caller's jobs of `kind` whose idempotency key starts with
    `key_prefix`, oldest first."""
    rows = await session.execute(
        select(Job.status, Job.payload)
        .where(Job.kind == kind, Job.idempotency_key.startswith(key_prefix, autoescape=True))
        .order_by(Job.created_at)
    )
    return [(status, payload) for status, payload in rows.all()]


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    return await session.scalar(select(Job).where(Job.id == job_id))


# The organization of jobs that are no tenant's (maintenance): reserved by the migrations, with
# no members, so nobody can act for it and the queue's tenant rules hold for its jobs unchanged.
SYSTEM_ORGANIZATION_ID = uuid.UUID(int=0)
