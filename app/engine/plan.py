"""What a run needs to execute its cases, read once per chunk: the target and judges with their
secrets decrypted, the frozen metrics, and the prompt version's template."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.evaluations.scoring import MetricSpec
from database.models import crud as model_crud
from database.models.models import ModelConfig
from database.models.service import resolve
from database.prompts import crud as prompt_crud
from database.results import model_pins
from database.results.models import Run
from providers.targets import TargetConfig
from utils.runtime import get_runtime


@dataclass(frozen=True)
class Plan:
    target: TargetConfig | None  # None: the outputs are recorded or reused, not asked for
    tools: list[dict[str, Any]]  # the target's, also when its outputs are only scored again
    simulator: TargetConfig | None  # plays a conversation's simulated user
    judges: dict[str, TargetConfig]
    metrics: list[MetricSpec]
    template: str | None
    system_prompt: str | None
    prompt_parameters: dict[str, Any]
    allow_private: bool


class Unrunnable(Exception):
    """What the run needs to call its target was deleted or changed since it was made: no
    retry brings it back."""


async def make_plan(session: AsyncSession, run: Run) -> Plan:
    runtime = get_runtime()
    calls_target = run.outputs_from_run_id is None and run.recorded_field is None
    target_row = (
        await model_crud.get_model(session, run.target_model_id) if run.target_model_id else None
    )
    if target_row is None and calls_target:
        raise Unrunnable("the run's target model configuration was deleted")
    metrics = [MetricSpec(**spec) for spec in run.metrics]
    judge_rows: dict[str, ModelConfig] = {}
    for spec in metrics:
        if spec.judge_model_id and spec.judge_model_id not in judge_rows:
            row = await model_crud.get_model(session, uuid.UUID(spec.judge_model_id))
            if row is not None:
                judge_rows[spec.judge_model_id] = row
    simulator_row = (
        await model_crud.get_model(session, run.simulator_model_id)
        if run.simulator_model_id
        else None
    )
    rows = [row for row in (target_row, simulator_row, *judge_rows.values()) if row is not None]
    if (why := model_pins.changed(run, rows)) is not None:
        raise Unrunnable(why)
    box = runtime.secret_box
    version = (
        await prompt_crud.get_version_by_id(session, run.prompt_version_id)
        if run.prompt_version_id
        else None
    )
    if version is None and run.prompted:
        raise Unrunnable("the run's prompt was deleted")
    return Plan(
        target=resolve(target_row, box) if target_row and calls_target else None,
        tools=list(target_row.tools or []) if target_row else [],
        simulator=resolve(simulator_row, box) if simulator_row else None,
        judges={judge_id: resolve(row, box) for judge_id, row in judge_rows.items()},
        metrics=metrics,
        template=version.template if version else None,
        system_prompt=version.system_prompt if version else None,
        prompt_parameters=dict(version.parameters) if version else {},
        allow_private=runtime.settings.allow_private_networks,
    )
