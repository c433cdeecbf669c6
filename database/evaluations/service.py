"""Metric definitions: typed parameters, judges, and a test set's default metrics."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from database.evaluations import crud
from database.evaluations.catalogue import is_judge, validate_parameters
from database.evaluations.models import Metric
from database.evaluations.schemas import MetricCreate, MetricRead, MetricUpdate
from database.models import crud as model_crud
from database.projects.service import require_project
from database.test_sets.models import TestSet
from utils.auth import Principal
from utils.crud import apply_update, refuse_nulls
from utils.errors import InvalidInput, NotFound
from utils.save_checks import off_loop


def to_read(metric: Metric) -> MetricRead:
    return MetricRead(
        id=metric.id,
        project_id=metric.project_id,
        name=metric.name,
        type=metric.type,
        parameters=metric.parameters,
        threshold=metric.threshold,
        operator=metric.operator,
        negate=metric.negate,
        weight=metric.weight,
        judge_model_id=metric.judge_model_id,
        description=metric.description,
        judge=is_judge(metric.type),
        created_at=metric.created_at,
        updated_at=metric.updated_at,
    )


async def get_metric_or_404(session: AsyncSession, metric_id: uuid.UUID) -> Metric:
    metric = await crud.get_metric(session, metric_id)
    if metric is None:
        raise NotFound("Metric not found")
    return metric


async def _check_judge(session: AsyncSession, judge_model_id: uuid.UUID | None) -> None:
    if judge_model_id is not None and await model_crud.get_model(session, judge_model_id) is None:
        raise InvalidInput("no such model configuration", field="judge_model_id")


async def create_metric(session: AsyncSession, principal: Principal, body: MetricCreate) -> Metric:
    body.parameters = await checked_parameters(body.type, body.parameters)
    await require_project(session, body.project_id, field="project_id")
    await _check_judge(session, body.judge_model_id)
    assert body.threshold is not None
    return await crud.create_metric(
        session,
        Metric(organization_id=principal.organization_id, **body.model_dump()),
    )


async def checked_parameters(metric_type: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """`parameters` checked against the metric's type in a save-check thread: a JSON Schema's
    check against its metaschema may take a second (while the body was parsed, only its size
    and nesting were: utils.save_checks)."""
    try:
        return await off_loop(partial(validate_parameters, metric_type, parameters))
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        raise InvalidInput(error["msg"], field=field) from exc


async def update_metric(session: AsyncSession, metric: Metric, body: MetricUpdate) -> Metric:
    changes = body.model_dump(exclude_unset=True)
    refuse_nulls(changes, "name", "parameters", "threshold", "operator", "negate", "weight")
    if "parameters" in changes:
        changes["parameters"] = await checked_parameters(metric.type, changes["parameters"])
    if "judge_model_id" in changes:
        await _check_judge(session, changes["judge_model_id"])
    apply_update(metric, changes)
    await crud.save_metric(session)
    return metric


def check_listed_once(metric_ids: Sequence[uuid.UUID]) -> None:
    """A metric scores a result once: a list naming one twice is a mistake of the caller's."""
    if len(set(metric_ids)) != len(metric_ids):
        raise InvalidInput("lists a metric more than once", field="metric_ids")


async def set_test_set_metrics(
    session: AsyncSession, test_set: TestSet, metric_ids: Sequence[uuid.UUID]
) -> list[Metric]:
    check_listed_once(metric_ids)
    metrics = await crud.get_metrics(session, metric_ids)
    usable = {m.id for m in metrics if m.project_id == test_set.project_id}
    unknown = [str(i) for i in metric_ids if i not in usable]
    if unknown:
        raise InvalidInput(
            f"not metrics of this set's project: {', '.join(unknown)}", field="metric_ids"
        )
    await crud.replace_test_set_metrics(
        session,
        test_set_id=test_set.id,
        organization_id=test_set.organization_id,
        metric_ids=metric_ids,
    )
    return metrics
