from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from utils.schemas import InputModel, Name, OutputModel, example


class ProjectCreate(InputModel):
    model_config = example({"name": "support-bot", "description": "The customer support assistant"})

    name: Name
    description: str | None = Field(default=None, max_length=10_000)
    default_target_model_id: uuid.UUID | None = Field(
        default=None, description="The model runs use when they name none"
    )
    default_judge_model_id: uuid.UUID | None = Field(
        default=None, description="The judge of judge metrics that name none"
    )


class ProjectUpdate(InputModel):
    model_config = example(
        {
            "description": "The customer support assistant (v2 prompts)",
            "default_judge_model_id": "4e5f6a7b-8c9d-4e0f-9a1b-2c3d4e5f6a7b",
        }
    )

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
