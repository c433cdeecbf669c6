"""The results that `result.recorded` events name, read back for the events' readers.

A run's log stores such an event as a reference to its result: the result and its evaluations
are committed in the same transaction and hold everything the event shows, so storing it twice
made the log cost as much as the results themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import any_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from database.evaluations.models import Evaluation
from database.results.models import Result
from utils.crud import uuid_array

Recorded = tuple[dict[str, Any], list[dict[str, Any]]]


def _columns(output_chars: int, text_chars: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The result's and evaluations' columns an event shows, its texts cut in the database: an
    output may be megabytes, read again by every stream that replays the run."""
    result = (
        Result.id,
        Result.position,
        Result.repetition,
        Result.test_id,
        Result.status,
        func.left(Result.output, output_chars).label("output"),
        Result.latency_ms,
        Result.input_tokens,
        Result.output_tokens,
        Result.cost,
        Result.cached,
        Result.error_type,
        func.left(Result.error_message, text_chars).label("error_message"),
    )
    evaluation = (
        Evaluation.result_id,
        Evaluation.metric_name,
        Evaluation.score,
        Evaluation.passed,
        func.left(Evaluation.reason, text_chars).label("reason"),
        func.left(Evaluation.error, text_chars).label("error"),
    )
    return result, evaluation


async def recorded_results(
    session: AsyncSession,
    run_id: uuid.UUID,
    result_ids: Sequence[uuid.UUID],
    *,
    output_chars: int,
    text_chars: int,
) -> dict[uuid.UUID, Recorded]:
    """Each result of the run (as the writer's dict, its output's first `output_chars`
    characters, its error's and evaluations' reasons and errors `text_chars`) with its
    evaluations in metric order, by id; a result that is gone (its run deleted meanwhile) is
    left out. Naming the run keeps the reads to its range of the tenant's index, which the
    planner might otherwise walk whole."""
    if not result_ids:
        return {}
    result_columns, evaluation_columns = _columns(output_chars, text_chars)
    results = await session.execute(
        select(*result_columns).where(
            Result.id == any_(uuid_array("ids", result_ids)), Result.run_id == run_id
        )
    )
    found: dict[uuid.UUID, Recorded] = {row.id: (dict(row._mapping), []) for row in results}
    evaluations = await session.execute(
        select(*evaluation_columns)
        .where(
            Evaluation.result_id == any_(uuid_array("ids", list(found))),
            Evaluation.run_id == run_id,
        )
        .order_by(Evaluation.result_id, Evaluation.id)  # ids grow: the run's metric order
    )
    for row in evaluations:
        found[row.result_id][1].append(dict(row._mapping))
    return found
