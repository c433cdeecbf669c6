"""The database-wide figures `/metrics` reports, read at scrape time by one function that sees
across organizations and returns aggregates only (migration 0015_metrics_snapshot)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_SNAPSHOT = text("SELECT metric, label, value FROM assay_metrics_snapshot()")


@dataclass(frozen=True, slots=True)
class Figure:
    metric: str  # runs, jobs_ready, jobs_oldest_ready_seconds, jobs_running, jobs_dead
    label: str  # a run status or a job kind
    value: float


async def read(connection: AsyncConnection) -> list[Figure]:
    rows = await connection.execute(_SNAPSHOT)
    return [Figure(row.metric, row.label, float(row.value)) for row in rows]
