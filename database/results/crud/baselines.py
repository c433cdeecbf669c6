"""Which decisions lean on a run as their baseline (and so must not see it change)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from database.projects.models import Project
from database.results.models import TERMINAL, Run


async def leaning_on(session: AsyncSession, run: Run) -> str | None:
    """What takes `run` as its baseline now, in words: its project, or a run whose gate is
    still to be decided; None when nothing does."""
    project_baseline = await session.scalar(
        select(Project.baseline_run_id).where(Project.id == run.project_id)
    )
    if project_baseline == run.id:
        return "the project's baseline"
    gated = await session.scalar(
        select(Run.id)
        .where(
            Run.project_id == run.project_id,
            Run.status.not_in(TERMINAL),
            Run.gate["baseline_run_id"].astext == str(run.id),
        )
        .limit(1)
    )
    return f"the baseline of run {gated}'s gate, not yet decided" if gated else None
