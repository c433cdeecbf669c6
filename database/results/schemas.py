from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from database.evaluations.schemas import EvaluationRead
from utils.schemas import InputModel, OutputModel

RunStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
ResultStatus = Literal["passed", "failed", "errored"]


class RunCreate(InputModel):
    test_set_id: uuid.UUID = Field(description="Its current version is pinned (made if needed)")
    target_model_id: uuid.UUID | None = Field(
        default=None, description="Else the project's default target"
    )
    prompt_id: uuid.UUID | None = Field(default=None, description="Renders each test's input")
    prompt_version: str | int = Field(default="latest", description="Number, label or latest")
    metric_ids: list[uuid.UUID] | None = Field(
        default=None, max_length=50, description="Else the test set's default metrics"
    )
    concurrency: int = Field(default=10, ge=1, description="Cases in flight at once")
    repetitions: int = Field(default=1, ge=1, le=100)
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=600, description="Per call; else the model's timeout"
    )
    use_cache: bool = Field(default=False, description="Reuse answers to identical requests")
    name: str | None = Field(default=None, max_length=200)


class RunCounts(OutputModel):
    total: int
    done: int
    passed: int
    failed: int
    errored: int


class RunRead(OutputModel):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str | None
    status: RunStatus
    test_set_id: uuid.UUID | None
    test_set_version_id: uuid.UUID
    test_set_version: int
    target_model_id: uuid.UUID | None
    prompt_version_id: uuid.UUID | None
    parent_run_id: uuid.UUID | None
    metrics: list[dict[str, Any]]
    concurrency: int
    repetitions: int
    timeout_seconds: float | None
    use_cache: bool
    counts: RunCounts
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ResultRead(OutputModel):
    id: uuid.UUID
    run_id: uuid.UUID
    position: int
    repetition: int
    test_id: uuid.UUID | None
    input: dict[str, Any]
    output: str | None
    status: ResultStatus
    latency_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None
    cached: bool
    error_type: str | None
    error_message: str | None
    created_at: datetime
    evaluations: list[EvaluationRead] = Field(default_factory=list)


class MetricSummary(OutputModel):
    name: str
    type: str
    mean_score: float | None
    pass_rate: float | None
    evaluated: int


class GroupSummary(OutputModel):
    value: str | None
    results: int
    pass_rate: float | None


class RunSummary(OutputModel):
    run_id: uuid.UUID
    status: RunStatus
    counts: RunCounts
    pass_rate: float | None = Field(description="passed / (passed + failed + errored)")
    metrics: list[MetricSummary]
    latency_ms: dict[str, float | None] = Field(description="p50, p95, p99, mean")
    tokens: dict[str, int]
    cost: float | None
    judge_cost: float | None
    errors: dict[str, int] = Field(description="Errored results by error type")
    by_behavior: list[GroupSummary]
    by_category: list[GroupSummary]
    by_topic: list[GroupSummary]


class StreamToken(OutputModel):
    token: str = Field(description="Accepted as ?token= by this run's stream and page only")
    expires_at: datetime
    events_url: str = Field(description="Server-Sent Events: GET it with EventSource")
    page_url: str = Field(description="The live run page")
