"""A run's results for its export, a page at a time, as plain rows: a large export would spend
most of its time building ORM objects and reading their attributes back otherwise."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import any_, select
from sqlalchemy.ext.asyncio import AsyncSession

from database.evaluations.models import Evaluation
from database.results.crud.pages import PAGE_BYTES, START, sized_page
from database.results.models import Result
from utils.crud import index_order_plans, uuid_array

# The fields of ResultRead and EvaluationRead, in their order.
_RESULT_COLUMNS = (
    Result.id,
    Result.run_id,
    Result.position,
    Result.repetition,
    Result.test_id,
    Result.input,
    Result.output,
    Result.status,
    Result.latency_ms,
    Result.input_tokens,
    Result.output_tokens,
    Result.cost,
    Result.cached,
    Result.error_type,
    Result.error_message,
    Result.trajectory,
    Result.created_at,
)
_EVALUATION_COLUMNS = (
    Evaluation.id,
    Evaluation.metric_id,
    Evaluation.metric_name,
    Evaluation.metric_type,
    Evaluation.score,
    Evaluation.passed,
    Evaluation.reason,
    Evaluation.error,
    Evaluation.input_tokens,
    Evaluation.output_tokens,
    Evaluation.cost,
)
_RESULT_FIELDS = tuple(column.key for column in _RESULT_COLUMNS)
_EVALUATION_FIELDS = tuple(column.key for column in _EVALUATION_COLUMNS)
_SIZED = sized_page(select(*_RESULT_COLUMNS))
_PAGE = (
    select(*(_SIZED.c[field] for field in _RESULT_FIELDS))
    .where(_SIZED.c.before < PAGE_BYTES)
    .order_by(_SIZED.c.position, _SIZED.c.repetition)
)


async def result_rows_after(
    session: AsyncSession, run_id: uuid.UUID, after: tuple[int, int] | None, *, limit: int
) -> list[dict[str, Any]]:
    """The run's next `limit` results after (position, repetition) `after`, in that order, fewer
    where PAGE_BYTES ends the page (none only at the end), each a mapping of ResultRead's fields
    with its evaluations (ordered by metric name)."""
    # (The evaluations, too, read by their (result_id, metric_name) index, by the page's ids.)
    async with index_order_plans(session):
        # Core's rows zipped with their names: the session's ORM loading and SQLAlchemy's
        # mappings took a third of a CSV export's profile, these rows a fifth.
        connection = await session.connection()
        position, repetition = after or START
        rows = await connection.execute(
            _PAGE,
            {"run_id": run_id, "position": position, "repetition": repetition, "limit": limit},
        )
        results = [dict(zip(_RESULT_FIELDS, row, strict=True), evaluations=[]) for row in rows]
        if not results:
            return []
        by_id = {result["id"]: result["evaluations"] for result in results}
        evaluations = await connection.execute(
            select(Evaluation.result_id, *_EVALUATION_COLUMNS)
            .where(Evaluation.result_id == any_(uuid_array("ids", list(by_id))))
            .order_by(Evaluation.result_id, Evaluation.metric_name)
        )
        for result_id, *evaluation in evaluations:
            by_id[result_id].append(dict(zip(_EVALUATION_FIELDS, evaluation, strict=True)))
    return results
