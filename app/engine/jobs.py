"""The job kinds the engine runs, and what happens when one gives up for good: handed to the
worker pool by the process bootstrap (app/bootstrap.py)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.engine import executor, webhooks
from app.engine.context import JobContext
from app.engine.maintenance import PRUNE_JOB, run_prune
from database.projects.webhooks import DELIVERY_JOB
from database.results.models import CHUNK_JOB
from tasks.worker import Handler

HANDLERS: dict[str, Handler] = {
    CHUNK_JOB: executor.run_chunk,
    DELIVERY_JOB: webhooks.deliver,
    PRUNE_JOB: run_prune,
}


async def on_dead(ctx: JobContext, session: AsyncSession, error: str) -> None:
    """A job gave up for good: end what depended on it (in the transaction that buried it)."""
    if ctx.kind == DELIVERY_JOB:
        await webhooks.give_up(ctx, session, error)
    if ctx.kind in HANDLERS and "run_id" in ctx.payload:
        await executor.mark_run_failed(ctx, session, error)
