"""The payload of each event type of a run's stream, as schemas: `/public/openapi.json`
describes the stream with them, and a test holds the events a real run records to them."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from database.results import events
from database.results.schemas import GateStatus, ResultStatus


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Counts(_Payload):
    total: int = Field(description="Cases times repetitions")
    done: int
    passed: int
    failed: int
    errored: int


class MetricName(_Payload):
    name: str
    type: str


class RunStarted(_Payload):
    status: Literal["running"]
    total: int
    concurrency: int
    repetitions: int
    metrics: list[MetricName]


class EventEvaluation(_Payload):
    """A metric's verdict on the case (its type is in `run.started`; every reason is in the
    result's evaluations)."""

    metric: str
    score: float
    passed: bool
    reason: str | None = Field(
        default=None,
        description="Why the metric did not pass, cut at "
        f"{events.REASON_CHARS:,} characters; only on a metric that failed or errored",
    )
    error: str | None = Field(
        default=None,
        description=f"Why the metric could not score, cut at {events.REASON_CHARS:,} characters;"
        " only when it could not",
    )


class ResultRecorded(_Payload):
    """What a live row shows of a case's result; the whole result (its output, input and every
    reason) is `GET /api/v1/results/{result_id}`."""

    result_id: uuid.UUID
    position: int = Field(description="The case's position in the test set version")
    repetition: int
    test_id: uuid.UUID | None
    status: ResultStatus
    output: str | None = Field(
        description=f"A preview: the first {events.OUTPUT_PREVIEW_CHARS:,} characters"
    )
    output_truncated: bool = Field(description="`true`: the output is longer than its preview")
    latency_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None
    cached: bool = Field(
        default=False,
        description="Only when `true`: no call made the output now (it came from the response"
        " cache, or the run scores recorded or earlier outputs: a rescore)",
    )
    error_type: str | None = Field(default=None, description="Only on an errored result")
    error_message: str | None = Field(
        default=None,
        description=f"Only on an errored result, cut at {events.REASON_CHARS:,} characters",
    )
    evaluations: list[EventEvaluation]


class RunProgress(Counts):
    pass


class RunFinished(Counts):
    status: Literal["completed", "failed", "stopped"]
    error: str | None = Field(default=None, description="Why it failed or stopped")
    continues: bool | None = Field(
        default=None, description="`true`: a `run.verdict` follows (a gated run)"
    )


class RunCancelled(Counts):
    status: Literal["cancelled"]
    continues: bool | None = Field(
        default=None, description="`true`: a `run.verdict` follows (a gated run)"
    )


class RunVerdict(_Payload):
    status: GateStatus
    reasons: list[str]
    baseline_run_id: uuid.UUID | None
    comparison: dict[str, object] | None


_SHARED = (
    f"cut at {events.PREVIEW_CHARS:,} characters, and the texts of every call and answer of"
    f" the event together at {events.CALLS_PREVIEW_CHARS:,} (later ones shorter, or empty)"
)
_NAME = Field(description=f"Cut at {events.NAME_CHARS} characters")


class StepToolCall(_Payload):
    id: str = _NAME
    name: str = _NAME
    arguments: dict[str, object] | str = Field(
        description=f"JSON, or the model's raw text; as text when cut ({_SHARED})"
    )


class StepToolResult(_Payload):
    id: str = _NAME
    name: str = _NAME
    content: str | None = Field(default=None, description=f"The mocked answer, as text ({_SHARED})")
    error: str | None = Field(default=None, description="Why the call got no answer")


class StepCompleted(_Payload):
    """One model call of an agent's loop (the result's trajectory holds them all, whole)."""

    position: int
    repetition: int
    step: int = Field(description="1 for the first call")
    text: str = Field(description=f"Cut at {events.PREVIEW_CHARS:,} characters")
    text_truncated: bool
    tool_calls: list[StepToolCall]
    tool_results: list[StepToolResult]
    latency_ms: float
    input_tokens: int | None
    output_tokens: int | None
    error: str | None = Field(default=None, description="A call the test could not answer")
    stopped: Literal["max_steps"] | None = Field(
        default=None, description="Still calling tools at the step bound: the loop ended"
    )


class TurnCompleted(_Payload):
    """One turn of a conversation (the result's trajectory holds them all, whole)."""

    position: int
    repetition: int
    turn: int = Field(description="1 for the first")
    user: str = Field(description=f"The user's message, cut at {events.PREVIEW_CHARS:,}")
    text: str = Field(description=f"The answer, cut at {events.PREVIEW_CHARS:,} characters")
    tool_calls: list[StepToolCall]
    steps: int = Field(description="Model calls the answer took (an agent's loop)")
    latency_ms: float
    input_tokens: int | None
    output_tokens: int | None
    ended: Literal["script_done", "goal_reached", "target_gave_up", "max_turns", "size"] | None = (
        Field(
            default=None,
            description="On the last turn: why the conversation ended (size: its turns would"
            " hold more than 16 MB)",
        )
    )


class OutputDelta(_Payload):
    position: int
    repetition: int
    text: str
    reset: bool | None = Field(
        default=None, description="`true`: the call was retried; drop the text so far"
    )


class EvaluationDelta(OutputDelta):
    metric: str


STREAM_EVENTS: dict[str, type[_Payload]] = {
    events.RUN_STARTED: RunStarted,
    events.RESULT_RECORDED: ResultRecorded,
    events.RUN_PROGRESS: RunProgress,
    events.RUN_FINISHED: RunFinished,
    events.RUN_CANCELLED: RunCancelled,
    events.RUN_VERDICT: RunVerdict,
    events.STEP_COMPLETED: StepCompleted,
    events.TURN_COMPLETED: TurnCompleted,
    events.OUTPUT_DELTA: OutputDelta,
    events.EVALUATION_DELTA: EvaluationDelta,
}
