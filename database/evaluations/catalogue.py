"""The metric catalogue: every metric type, declared once.

A declaration says what the type is called, whether it is a deterministic check or an LLM
judge, its typed parameters, its default threshold and operator, and how it scores. The API's
schema and its OpenAPI description, the validation of a metric's parameters, and the run
engine all read these declarations, and nothing else lists the types: a new metric type is a
new `MetricType` below (with its scorer in checks.py, agent_checks.py or judges.py) and its
tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from database.evaluations import agent_checks, checks, judges
from database.evaluations.scoring import (
    Check,
    Instructions,
    Judge,
    MetricSpec,
    NoParameters,
    Observation,
    Operator,
    ScoringError,
    Verdict,
    decide,
)
from utils.schemas import InputModel, Name


@dataclass(frozen=True)
class MetricType:
    name: str
    kind: Literal["check", "judge"]
    parameters: type[InputModel]
    summary: str
    threshold: float = 1.0
    operator: Operator = ">="
    check: Check | None = None  # a check's scorer
    instructions: Instructions | None = None  # what a judge is asked

    def __post_init__(self) -> None:
        scorer = self.check if self.kind == "check" else self.instructions
        other = self.instructions if self.kind == "check" else self.check
        if scorer is None or other is not None:
            raise TypeError(f"metric type {self.name}: a {self.kind} needs its own scorer only")

    @property
    def judged(self) -> bool:
        return self.kind == "judge"


def _check(
    name: str, parameters: type[InputModel], check: Check, summary: str, **kw: Any
) -> MetricType:
    return MetricType(name, "check", parameters, summary, check=check, **kw)


def _judge(name: str, parameters: type[InputModel], asks: Instructions, summary: str) -> MetricType:
    return MetricType(name, "judge", parameters, summary, threshold=0.5, instructions=asks)


_TYPES: tuple[MetricType, ...] = (
    _check("equals", checks.ExpectedText, checks.equals, "The output equals the reference"),
    _check("contains", checks.ExpectedText, checks.contains, "The output contains the reference"),
    _check("icontains", checks.ExpectedText, checks.icontains, "Contains the reference, any case"),
    _check("starts-with", checks.ExpectedText, checks.starts_with, "Starts with the reference"),
    _check("contains-any", checks.TextList, checks.contains_any, "Contains one of the values"),
    _check(
        "contains-all",
        checks.TextList,
        checks.contains_all,
        "Contains every value (the score is the share found)",
    ),
    _check("regex", checks.RegexParameters, checks.matches_regex, "Matches a regular expression"),
    _check("is-json", NoParameters, checks.is_json, "The output is JSON"),
    _check(
        "json-schema",
        checks.JsonSchemaParameters,
        checks.matches_json_schema,
        "The output is JSON valid against a schema",
    ),
    _check(
        "similarity",
        checks.ExpectedText,
        checks.similarity,
        "Edit-distance similarity to the reference, 0 to 1",
        threshold=0.8,
    ),
    _check("max-latency", checks.MaxLatency, checks.max_latency, "The call took at most `ms`"),
    _check("max-cost", checks.MaxCost, checks.max_cost, "The call cost at most `usd`"),
    _check("max-tokens", checks.MaxTokens, checks.max_tokens, "At most `tokens` in and out"),
    _check("word-count", checks.WordCount, checks.word_count, "Words between `min` and `max`"),
    _judge("llm-rubric", judges.Rubric, judges.rubric, "A judge scores your criteria (G-Eval)"),
    _judge(
        "answer-relevance",
        NoParameters,
        judges.answer_relevance,
        "A judge scores how well the answer addresses the input",
    ),
    _judge(
        "faithfulness",
        NoParameters,
        judges.faithfulness,
        "A judge scores the share of claims the test's context supports",
    ),
    _judge("refusal", NoParameters, judges.refusal, "A judge says whether the answer refused"),
    # Agents: their tool calls and steps (see agent_checks.py).
    _check(
        "tool-call",
        agent_checks.ToolCallParameters,
        agent_checks.tool_call,
        "The agent made the expected tool calls (`name`, or the test's expected_tool_calls); "
        "the score is the share made",
    ),
    _check(
        "tool-args-schema",
        NoParameters,
        agent_checks.tool_args_schema,
        "Every tool call's arguments are valid against its tool's parameters schema",
    ),
    _check(
        "trajectory",
        agent_checks.TrajectoryParameters,
        agent_checks.trajectory,
        "The sequence of tool calls against the test's expected_tool_calls, by `mode`",
    ),
    _check("step-count", agent_checks.StepCount, agent_checks.step_count, "At most `max` steps"),
    _judge(
        "task-completion",
        NoParameters,
        judges.task_completion,
        "A judge scores whether the agent achieved the task, over its whole trajectory",
    ),
    _judge(
        "tool-use-rationale",
        NoParameters,
        judges.tool_use_rationale,
        "A judge scores whether the agent's tool calls were needed and well chosen",
    ),
)

CATALOGUE: Mapping[str, MetricType] = MappingProxyType({t.name: t for t in _TYPES})
if len(CATALOGUE) != len(_TYPES):
    raise TypeError("a metric type is declared twice")


def is_judge(metric_type: str) -> bool:
    return CATALOGUE[metric_type].judged


class PerTestParameters(InputModel):
    """Instead of parameters of its own, a metric may take each test's: the test's metadata
    under `from_test` holds them (and may hold a `threshold`). A test without that key is not
    scored by the metric, so one metric can carry a different reference on every test (an
    imported promptfoo `assert` becomes such a metric)."""

    from_test: Name = Field(description="The metadata key holding each test's parameters")


FROM_TEST = "from_test"


def validate_parameters(metric_type: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a metric type, checked; errors name `parameters.<field>`."""
    model = PerTestParameters if FROM_TEST in parameters else CATALOGUE[metric_type].parameters
    try:
        return model.model_validate(parameters).model_dump(by_alias=True, exclude_none=True)
    except ValidationError as exc:
        details = [
            InitErrorDetails(
                type=PydanticCustomError("parameters", "{message}", {"message": error["msg"]}),
                loc=("parameters", *error["loc"]),
                input=error.get("input"),
            )
            for error in exc.errors()
        ]
        raise ValidationError.from_exception_data("MetricCreate", details) from None


MAX_THRESHOLD = 1_000_000


def for_case(spec: MetricSpec, metadata: Mapping[str, Any]) -> MetricSpec | None:
    """The metric as it scores one test: with the test's own parameters when it takes them
    (see PerTestParameters), or None when the test does not give any."""
    key = spec.parameters.get(FROM_TEST)
    if key is None:
        return spec
    given = metadata.get(key)
    if given is None:
        return None
    parameters, threshold = given_parameters(spec.type, key, given)
    return replace(
        spec, parameters=parameters, threshold=spec.threshold if threshold is None else threshold
    )


def given_parameters(metric_type: str, key: str, given: Any) -> tuple[dict[str, Any], float | None]:
    """A test's parameters for a metric of `metric_type` (under metadata[key]), checked, and
    its threshold if it sets one; ScoringError saying what is wrong."""
    where = f"the test's metadata[{key!r}]"
    if not isinstance(given, dict):
        raise ScoringError(f"{where} is not an object of parameters")
    parameters = dict(given)
    threshold = parameters.pop("threshold", None)
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0 <= threshold <= MAX_THRESHOLD  # NaN fails this too
    ):
        raise ScoringError(f"{where}.threshold: a number from 0 to {MAX_THRESHOLD:,}")
    try:
        checked = CATALOGUE[metric_type].parameters.model_validate(parameters)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ScoringError(f"{where}{'.' + field if field else ''}: {first['msg']}") from None
    dumped = checked.model_dump(by_alias=True, exclude_none=True)
    return dumped, None if threshold is None else float(threshold)


def judge_prompt(spec: MetricSpec, obs: Observation) -> str:
    """What the judge of a judge type is asked about one observation."""
    instructions = CATALOGUE[spec.type].instructions
    assert instructions is not None, f"{spec.type} is not a judge"
    return instructions(spec, obs)


async def score(spec: MetricSpec, obs: Observation, judge: Judge | None) -> Verdict:
    """One metric on one observation. Errors become a verdict with `error` set, not raised."""
    metric_type = CATALOGUE[spec.type]
    try:
        if metric_type.check is not None:
            value, reason = metric_type.check(spec, obs)
            verdict = Verdict(score=value, reason=reason)
        else:
            if judge is None:
                raise ScoringError("no judge model: set judge_model_id or the project's default")
            verdict = await judge(judge_prompt(spec, obs))
    except ScoringError as exc:
        return Verdict(score=0.0, reason=str(exc), error=str(exc))
    if verdict.error is None:
        verdict.passed = decide(spec, verdict.score)
    return verdict
