"""Queries of metric definitions, a test set's default metrics, and the evaluations (one
metric's verdict on one result). Flush, never commit."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import RowMapping, Table, TextClause, any_, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from database.evaluations.models import Evaluation, Metric, TestSetMetric
from database.projects.models import Project
from utils.crud import (
    delete_once,
    flush_unique,
    json_row_groups,
    paginate,
    recordset_insert,
    uuid_array,
)

DUPLICATE_NAME = "A metric with this name already exists in the project"


async def create_metric(session: AsyncSession, metric: Metric) -> Metric:
    session.add(metric)
    await flush_unique(session, DUPLICATE_NAME)
    return metric


async def get_metric(session: AsyncSession, metric_id: uuid.UUID) -> Metric | None:
    return await session.get(Metric, metric_id)


async def get_metrics(session: AsyncSession, metric_ids: Sequence[uuid.UUID]) -> list[Metric]:
    rows = await session.scalars(select(Metric).where(Metric.id.in_(metric_ids)))
    by_id = {metric.id: metric for metric in rows.all()}
    return [by_id[i] for i in metric_ids if i in by_id]


async def metrics_named(
    session: AsyncSession, project_id: uuid.UUID, names: Sequence[str], *, making: bool = False
) -> dict[str, Metric]:
    """`making`: the caller makes the project's metrics of these names that are missing, and
    holds the project's row (FOR NO KEY UPDATE) until its transaction ends, so that two doing
    so take turns (the second finds the first's, rather than a unique name's conflict)."""
    if making:
        await session.execute(
            select(Project.id).where(Project.id == project_id).with_for_update(key_share=True)
        )
    rows = await session.scalars(
        select(Metric).where(Metric.project_id == project_id, Metric.name.in_(names))
    )
    return {metric.name: metric for metric in rows.all()}


async def list_metrics(
    session: AsyncSession, *, project_id: uuid.UUID | None, limit: int, offset: int
) -> tuple[list[Metric], int]:
    query = select(Metric).order_by(Metric.name, Metric.id)
    if project_id is not None:
        query = query.where(Metric.project_id == project_id)
    return await paginate(session, query, limit=limit, offset=offset)


async def save_metric(session: AsyncSession) -> None:
    await flush_unique(session, DUPLICATE_NAME)


async def delete_metric(session: AsyncSession, metric: Metric) -> None:
    await delete_once(session, metric, "Metric")


async def test_set_metric_ids(session: AsyncSession, test_set_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.scalars(
        select(TestSetMetric.metric_id)
        .where(TestSetMetric.test_set_id == test_set_id)
        .order_by(TestSetMetric.position)
    )
    return list(rows.all())


async def replace_test_set_metrics(
    session: AsyncSession,
    *,
    test_set_id: uuid.UUID,
    organization_id: uuid.UUID,
    metric_ids: Sequence[uuid.UUID],
) -> None:
    await session.execute(delete(TestSetMetric).where(TestSetMetric.test_set_id == test_set_id))
    if metric_ids:
        await session.execute(
            insert(TestSetMetric),
            [
                {
                    "test_set_id": test_set_id,
                    "metric_id": metric_id,
                    "organization_id": organization_id,
                    "position": position,
                }
                for position, metric_id in enumerate(metric_ids)
            ],
        )


# --- evaluations ----------------------------------------------------------------------------

EVALUATIONS: Table = Evaluation.__table__  # type: ignore[assignment]


@functools.cache
def _insert_evaluations() -> TextClause:
    # Built on first use: foreign-key column types resolve once all tables are registered.
    return recordset_insert(EVALUATIONS, [c.key for c in EVALUATIONS.columns])


async def insert_evaluations(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Writes evaluations, in one statement unless they are very large (rows as
    app/engine/case.py builds them)."""
    if rows:
        for group in json_row_groups(rows):
            await session.execute(_insert_evaluations(), group)


async def evaluations_of(
    session: AsyncSession, result_ids: Sequence[uuid.UUID], run_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, list[RowMapping]]:
    """The evaluations of results of `run_ids`, per result, as rows of their columns (a
    page's, validated with their results at once). Naming the runs keeps the read to their
    range of the tenant's index, which the planner might otherwise walk whole."""
    rows = await session.execute(
        select(EVALUATIONS)
        .where(
            Evaluation.result_id == any_(uuid_array("result_ids", result_ids)),
            Evaluation.run_id.in_(run_ids),
        )
        .order_by(Evaluation.result_id, Evaluation.metric_name)  # (the unique index's order)
    )
    grouped: dict[uuid.UUID, list[RowMapping]] = {i: [] for i in result_ids}
    for evaluation in rows.mappings():
        grouped[evaluation["result_id"]].append(evaluation)
    return grouped
