"""What a comparison of two runs answers (`GET /runs/{id}/compare`, a gate's baseline check)."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import Field

from database.results.schemas import PASS_RATE, ResultStatus, RunStatus
from utils import statistics as stats
from utils.schemas import OutputModel

Verdict = Literal["improved", "regressed", "equivalent", "inconclusive"]


class Delta(OutputModel):
    """Candidate minus baseline over the paired cases, with its bootstrap interval."""

    baseline: float | None
    candidate: float | None
    delta: float | None
    ci: tuple[float, float] | None = Field(description="95% paired bootstrap over cases")


class Tested(Delta):
    cases: int = Field(description="Paired cases")
    test: str = Field(
        description="mcnemar-exact (pass/fail cases), sign-flip (pass shares of repetitions: the"
        " paired randomization test of the mean change) or wilcoxon-signed-rank (graded scores)"
    )
    p_value: float | None
    p_adjusted: float | None = Field(description="Holm, within its family (see method)")
    verdict: Verdict
    not_worse: bool = Field(
        description="The change is shown no worse than the margin (min_effect): improved or"
        " equivalent, or an interval whose worse end is inside the margin with enough cases"
        " (and, for pass rates, the cases that regressed whole bounded within it). What a gate"
        " failing on regression asks: an inconclusive change that is not worse passes it"
    )
    reason: str


class MetricComparison(OutputModel):
    name: str
    type: str | None
    pass_rate: Tested
    score: Tested | None = Field(
        description="When scores are graded, not only 0 or 1, and the metric's rule has a"
        " better direction: its verdict is of the change for the better, which is lower for a"
        " rule that passes below its threshold (<, <= or a negated >=: its reason says"
        " 'lower passes'); none for =="
    )


class SliceComparison(OutputModel):
    field: Literal["behavior", "category", "topic"]
    value: str | None
    pass_rate: Tested


class ResultSide(OutputModel):
    result_id: uuid.UUID
    status: ResultStatus
    output: str | None
    output_truncated: bool


class Flip(OutputModel):
    test_id: uuid.UUID | None
    direction: Literal["pass_to_fail", "fail_to_pass"]
    baseline_pass_share: float
    candidate_pass_share: float
    baseline: ResultSide | None
    candidate: ResultSide | None


class Flips(OutputModel):
    pass_to_fail: int
    fail_to_pass: int
    items: list[Flip]
    limit: int
    offset: int


class CaseCounts(OutputModel):
    paired: int
    changed: int = Field(description="Content changed between the pinned versions")
    changed_included: bool
    only_in_run: int
    only_in_baseline: int
    unrated: int = Field(description="Every repetition errored on one side or both")
    only_in_run_test_ids: list[uuid.UUID | None] = Field(description="The first 100")
    only_in_baseline_test_ids: list[uuid.UUID | None] = Field(description="The first 100")
    changed_test_ids: list[uuid.UUID | None] = Field(description="The first 100")


class RunErrors(OutputModel):
    errored: int
    results: int = Field(description="Every result of the run, each repetition, errored or not")


class Errors(OutputModel):
    """Each run's errored results, of every case (paired or not), as a gate counts them."""

    run: RunErrors
    baseline: RunErrors


class Method(OutputModel):
    confidence: float
    resamples: int
    seed: int
    intervals: str = stats.INTERVALS
    min_effect: float
    alpha: float
    multiple_comparisons: str
    families: dict[str, int] = Field(description="The number of distinct tests in each family")
    pass_rate: str = PASS_RATE
    flips: str


class Comparison(OutputModel):
    run_id: uuid.UUID
    baseline_run_id: uuid.UUID
    run_status: RunStatus
    baseline_status: RunStatus
    partial: bool = Field(
        description="Either run has not completed (queued, running, cancelled, stopped,"
        " failed): compared on the results it has so far, the verdict may not hold"
    )
    verdict: Verdict
    reason: str
    cases: CaseCounts
    overall: Tested
    metrics: list[MetricComparison]
    slices: list[SliceComparison]
    cost: Delta = Field(description="Target cost per case, USD")
    tokens: Delta = Field(description="Target tokens per case")
    latency_p50_ms: Delta
    latency_p95_ms: Delta
    flips: Flips
    errors: Errors = Field(
        description="A gate failing on regression is undecided when the run's share of errored"
        " results is above its baseline's by more than min_effect: the verdicts leave out the"
        " cases errors hide"
    )
    method: Method
