from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from database.evaluations.schemas import EvaluationRead
from database.tests.agent_fields import MAX_STEPS
from utils.schemas import InputModel, Name, OutputModel, Page, WholeNumber, example

RunStatus = Literal["queued", "running", "completed", "failed", "cancelled", "stopped"]
ResultStatus = Literal["passed", "failed", "errored"]
GateStatus = Literal["passed", "failed", "undecided"]
PASS_RATE = (
    "The mean, over cases, of each case's share of passing repetitions; errored repetitions "
    "are left out (and counted apart), and a case with only errored repetitions is not rated. "
    "With one repetition per case: passed / (passed + failed)."
)
Budget = Annotated[float, Field(gt=0, le=1_000_000)]
MAX_REPETITIONS = 100  # per case, in all (a repeat adds to them)


class GateSpec(InputModel):
    """What decides a run's gate when it ends (see GateResult)."""

    baseline: Literal["project"] | uuid.UUID | None = Field(
        default=None,
        description="Compare with the project's baseline run (resolved when the run is created)"
        " or with a run of the same project; none: floors only",
    )
    fail_on: Literal["regression", "never"] | Annotated[list[Name], Field(max_length=50)] = Field(
        default="regression",
        description="Fail on a regression overall or of any metric, only of the metrics named,"
        " or never (floors still apply)",
    )
    min_pass_rate: float | None = Field(default=None, ge=0, le=1, description="Floor, overall")
    min_metric_pass_rates: dict[Name, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, max_length=50, description="Floors per metric, by metric name"
    )
    min_effect: float = Field(
        default=0.02, ge=0, le=1, description="Changes smaller than this are equivalent"
    )
    max_error_rate: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Above this share of errored results the gate is undecided",
    )
    max_dropped: int | None = Field(
        default=None,
        ge=0,
        description="Fail when more of the baseline's tests than this are not in the run"
        " (deleted from the set since, failing ones too); none: they are listed in the"
        " comparison (`cases.only_in_baseline`), not held against the run",
    )


class GateResult(OutputModel):
    status: GateStatus
    reasons: list[str] = Field(description="Why, in words: each failed check or doubt")
    baseline_run_id: uuid.UUID | None
    comparison: dict[str, Any] | None = Field(
        description="Per metric and overall: the verdict of the comparison with the baseline"
    )


class RunCreate(InputModel):
    model_config = example(
        {
            "test_set_id": "7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f",
            "target_model_id": "4e5f6a7b-8c9d-4e0f-9a1b-2c3d4e5f6a7b",
            "metric_ids": [
                "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",
                "6b7c8d9e-0f1a-4b2c-9d3e-4f5a6b7c8d9e",
            ],
            "repetitions": 1,
            "concurrency": 10,
            "name": "prompt v2",
            "max_cost": 5.0,
            "gate": {"baseline": "project", "fail_on": "regression", "min_pass_rate": 0.9},
        }
    )

    test_set_id: uuid.UUID = Field(description="Its current version is pinned (made if needed)")
    target_model_id: uuid.UUID | None = Field(
        default=None, description="Else the project's default target"
    )
    recorded_output: Name | None = Field(
        default=None,
        description="Score outputs you already have instead of calling a target: the key of each"
        " test's metadata holding its output (an imported file's extra column lands there)",
    )
    prompt_id: uuid.UUID | None = Field(default=None, description="Renders each test's input")
    prompt_version: WholeNumber | str = Field(
        default="latest", description="Number, label or latest"
    )
    metric_ids: list[uuid.UUID] | None = Field(
        default=None, max_length=50, description="Else the test set's default metrics"
    )
    concurrency: int = Field(
        default=10,
        ge=1,
        description="Cases in flight at once, at most (in each process that runs the run's"
        " chunks, when several share them)",
    )
    repetitions: int = Field(
        default=1,
        ge=1,
        le=MAX_REPETITIONS,
        description="Times each case runs: with more than one, pass@k and flakiness",
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=600, description="Per call; else the model's timeout"
    )
    simulator_model_id: uuid.UUID | None = Field(
        default=None,
        description="Plays the simulated user of conversation tests; else the project's"
        " default judge (resolved when the run is made)",
    )
    max_steps: int = Field(
        default=10,
        ge=1,
        le=MAX_STEPS,
        description="An agent's model calls per case, unless its test sets its own",
    )
    use_cache: bool = Field(default=False, description="Reuse answers to identical requests")
    name: str | None = Field(default=None, max_length=200)
    max_cost: Budget | None = Field(
        default=None,
        description="Budget in USD (target and judges): reached, the run takes no new cases and"
        " ends as stopped",
    )
    gate: GateSpec | None = Field(default=None, description="Decided when the run ends")


class RepeatCreate(InputModel):
    model_config = example({"repetitions": 2, "cases": "flaky", "max_cost": 2.0})

    repetitions: int = Field(
        default=1, ge=1, le=MAX_REPETITIONS, description="More repetitions per case"
    )
    cases: Literal["all", "flaky", "undecided"] = Field(
        default="undecided",
        description="flaky: mixed outcomes; undecided: flaky, or with an errored repetition",
    )
    max_cost: Budget | None = Field(default=None, description="Budget of the added work, USD")


class ResumeCreate(InputModel):
    model_config = example({"max_cost": 2.0})

    max_cost: Budget | None = Field(
        default=None,
        description="More budget, USD, on top of what the run has spent (its budget becomes"
        " spent + max_cost); else what is left of its own budget. Required to resume a run"
        " whose budget is spent",
    )


class RerunCreate(InputModel):
    model_config = example({"max_cost": 2.0})

    max_cost: Budget | None = Field(
        default=None,
        description="The new run's budget, USD; else a budget the size of this run's max_cost"
        " (none if it has none)",
    )


class RescoreCreate(InputModel):
    model_config = example(
        {"metric_ids": ["6b7c8d9e-0f1a-4b2c-9d3e-4f5a6b7c8d9e"], "name": "stricter judge"}
    )

    metric_ids: list[uuid.UUID] = Field(
        min_length=1, max_length=50, description="The metrics that score the stored outputs"
    )
    name: str | None = Field(default=None, max_length=200)
    concurrency: int | None = Field(default=None, ge=1, description="Else the parent's")
    max_cost: Budget | None = Field(default=None, description="Budget of the judges, USD")
    gate: GateSpec | None = Field(default=None, description="Decided when the run ends")


class BaselineSet(InputModel):
    model_config = example({"run_id": "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a"})

    run_id: uuid.UUID | None = Field(description="A completed run of the project; null clears")


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
    max_steps: int | None
    simulator_model_id: uuid.UUID | None
    use_cache: bool
    counts: RunCounts
    error: str | None = Field(description="Why the run failed or stopped")
    outputs_from_run_id: uuid.UUID | None = Field(description="A rescore: whose outputs")
    recorded_output: str | None = Field(description="Outputs read from this metadata key")
    max_cost: float | None
    spent: float = Field(description="USD spent so far: target and judges")
    gate: dict[str, Any] | None
    gate_result: GateResult | None
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
    latency_ms: float | None = Field(
        description="null for an errored result, and for an output no call was timed for"
        " (cached, recorded): left out of latency figures"
    )
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None
    cached: bool = Field(
        description="No call made the output now: it came from the response cache, or the run"
        " scores recorded or earlier outputs (a rescore)"
    )
    error_type: str | None
    error_message: str | None
    trajectory: list[dict[str, Any]] | None = Field(
        default=None,
        description="An agent's steps (each model call's text, tool calls and the mocked"
        " tools' results), or a conversation's turns (each user message, answer and tool"
        " calls, the last saying how it ended); null for a single answer",
    )
    created_at: datetime
    evaluations: list[EvaluationRead] = Field(default_factory=list)


class ResultPage(Page[ResultRead]):
    """One page of a run's results, in case position and repetition order."""

    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page (same cost at any depth, no result"
        " repeated, and none skipped that was there at the start; of a running run's results"
        " added meanwhile, those ahead of the page come, those behind it do not: cases finish"
        " out of order, so walk again once the run has ended); null on the last page. A page"
        " takes no more results once their outputs, errors, inputs and trajectories reach"
        " 4 MB (it always holds one): it may hold fewer than `limit` while more follow, so"
        " walk by this, or by `offset` plus the page's length, never by `limit`",
        examples=["MTIzNHwwfHwwMTk1ZjNhMmM0ZDE"],
    )


class MetricSummary(OutputModel):
    name: str
    type: str
    mean_score: float | None
    pass_rate: float | None = Field(description=PASS_RATE)
    evaluated: int
    errored: int


class GroupSummary(OutputModel):
    value: str | None
    results: int
    errored: int
    pass_rate: float | None = Field(description=PASS_RATE)


class CaseRepetitions(OutputModel):
    """One case's repetitions: how many passed, and what that says."""

    position: int
    test_id: uuid.UUID | None
    repetitions: int = Field(description="Scored repetitions (errored ones left out)")
    passed: int
    errored: int
    pass_at_k: dict[int, float] = Field(description="Unbiased pass@k for every k up to n")
    pass_hat_k: dict[int, float] = Field(description="pass^k: all of k attempts pass")
    flaky: bool = Field(description="Mixed outcomes")


class RepetitionSummary(OutputModel):
    k: int = Field(description="The most repetitions any case has")
    pass_at_1: float | None = Field(description=PASS_RATE)
    pass_at_1_ci: tuple[float, float] | None = Field(
        description="95% Wilson score interval of the mean pass share over cases"
    )
    pass_at_k: dict[int, float] = Field(
        description="Mean over cases, for every k up to the fewest repetitions a case has"
    )
    pass_hat_k: dict[int, float] = Field(description="The same, of pass^k")
    flaky: int
    flaky_cases: list[CaseRepetitions] = Field(description="The first 100 flaky cases")


class RunSummary(OutputModel):
    run_id: uuid.UUID
    status: RunStatus
    counts: RunCounts
    pass_rate: float | None = Field(description=PASS_RATE)
    error_rate: float | None = Field(description="errored / results")
    metrics: list[MetricSummary]
    latency_ms: dict[str, float | None] = Field(description="p50, p95, p99, mean")
    tokens: dict[str, int]
    cost: float | None = Field(
        description="USD of the target's answers scored here (errored results left out, as"
        " from latency and tokens), at the model's prices, cached answers included: what these"
        " outputs cost. What the run paid is the run's `spent`: cached answers free, errored"
        " calls and judges included"
    )
    judge_cost: float | None = Field(description="USD of the judges' calls")
    errors: dict[str, int] = Field(description="Errored results by error type")
    by_behavior: list[GroupSummary]
    by_category: list[GroupSummary]
    by_topic: list[GroupSummary]
    repetitions: RepetitionSummary | None = Field(description="With more than one repetition")
    gate_result: GateResult | None


class StreamToken(OutputModel):
    token: str = Field(description="Accepted as ?token= by this run's stream and page only")
    expires_at: datetime
    events_url: str = Field(description="Server-Sent Events: GET it with EventSource")
    page_url: str = Field(description="The live run page")
