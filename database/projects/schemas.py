from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from utils.schemas import InputModel, Name, OutputModel


class ProjectCreate(InputModel):
    name: Name
    description: str | None = Field(default=None, max_length=10_000)
    default_target_model_id: uuid.UUID | None = None
    default_judge_model_id: uuid.UUID | None = None


class ProjectUpdate(InputModel):
    name: Name | None = None
    description: str | None = Field(default=None, max_length=10_000)
    default_target_model_id: uuid.UUID | None = None
    default_judge_model_id: uuid.UUID | None = None


class ProjectRead(OutputModel):
    id: uuid.UUID
    name: str
    description: str | None
    default_target_model_id: uuid.UUID | None
    default_judge_model_id: uuid.UUID | None
    baseline_run_id: uuid.UUID | None = Field(
        description="The run candidates are compared with by default (PUT .../baseline)"
    )
    created_at: datetime
    updated_at: datetime
