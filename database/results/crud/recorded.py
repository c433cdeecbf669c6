"""The results that `result.recorded` events name, read back for the events' readers.

A run's log stores such an event as a reference to its result: the result and its evaluations
are committed in the same transaction and hold everything the event shows, so storing it twice
made the log cost as much as the results themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import any_, select
from sqlalchemy.ext.asyncio import AsyncSession

from database.evaluations.models import Evaluation
from database.results.models import Result
from utils.crud import uuid_array

Recorded = tuple[dict[str, Any], list[dict[str, Any]]]

_RESULT_COLUMNS = (
    Result.id,
    Result.position,
    Result.repetition,
    Result.test_id,
    Result.status,
    Result.output,
    Result.latency_ms,
    Result.input_tokens,
    Result.output_tokens,
    Result.cost,
    Result.cached,
    Result.error_type,
    Result.error_message,
)
_EVALUATION_COLUMNS = (
    Evaluation.result_id,
    Evaluation.metric_name,
    Evaluation.score,
    Evaluation.passed,
    Evaluation.reason,
    Evaluation.error,
)


async def recorded_results(
    session: AsyncSession, run_id: uuid.UUID, result_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Recorded]:
    """Each result of the run (as the writer's dict) with its evaluations in metric order, by
    id; a result that is gone (its run deleted meanwhile) is left out. Naming the run keeps the
    reads to its range of the tenant's index, which the planner might otherwise walk whole."""
    if not result_ids:
        return {}
    results = await session.execute(
        select(*_RESULT_COLUMNS).where(
            Result.id == any_(uuid_array("ids", result_ids)), Result.run_id == run_id
        )
    )
    found: dict[uuid.UUID, Recorded] = {row.id: (dict(row._mapping), []) for row in results}
    evaluations = await session.execute(
        select(*_EVALUATION_COLUMNS)
        .where(
            Evaluation.result_id == any_(uuid_array("ids", list(found))),
            Evaluation.run_id == run_id,
        )
        .order_by(Evaluation.result_id, Evaluation.id)  # ids grow: the run's metric order
    )
    for row in evaluations:
        found[row.result_id][1].append(dict(row._mapping))
    return found
