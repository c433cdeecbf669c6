"""The job kinds the engine runs, and what happens when one gives up for good: handed to the
worker pool by the process bootstrap (app/bootstrap.py)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.engine import executor
from app.engine.context import JobContext
from database.results.service import CHUNK_JOB
from tasks.worker import Handler

HANDLERS: dict[str, Handler] = {CHUNK_JOB: executor.run_chunk}


async def on_dead(ctx: JobContext, session: AsyncSession, error: str) -> None:
    """A job gave up for good: end what depended on it (in the transaction that buried it)."""
    if ctx.kind in HANDLERS and "run_id" in ctx.payload:
        await executor.mark_run_failed(ctx, session, error)
