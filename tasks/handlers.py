"""Job kinds and their handlers."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.engine import executor
from database.results.service import CHUNK_JOB, LEGACY_START_JOB
from tasks.worker import Handler, JobContext

HANDLERS: dict[str, Handler] = {
    CHUNK_JOB: executor.run_chunk,
    LEGACY_START_JOB: executor.start_legacy_run,
}


async def on_dead(ctx: JobContext, session: AsyncSession, error: str) -> None:
    """A job gave up for good: end what depended on it (in the transaction that buried it)."""
    if ctx.job.kind in HANDLERS and "run_id" in ctx.job.payload:
        await executor.mark_run_failed(ctx, session, error)
