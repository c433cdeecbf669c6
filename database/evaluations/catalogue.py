"""The metric catalogue: every metric type, declared once.

A declaration says what the type is called, whether it is a deterministic check or an LLM
judge, its typed parameters, its default threshold and operator, and how it scores. The API's
schema and its OpenAPI description, the validation of a metric's parameters, and the run
engine all read these declarations, and nothing else lists the types: a new metric type is a
new `MetricType` below (with its scorer in checks.py, long_answers.py, agent_checks.py,
judges.py or conversation_judges.py) and its tests.

Every check also takes `scope`, for conversations: which turns' answers it checks (see SCOPES).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from types import MappingProxyType
from typing import Any, Literal, cast

import structlog
from pydantic import Field, ValidationError, create_model
from pydantic_core import InitErrorDetails, PydanticCustomError

from database.evaluations import agent_checks, checks, conversation_judges, judges, long_answers
from database.evaluations.scopes import SCOPE, SCOPES, Scope, check_in_scope, heavy_over_turns
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
from utils.check_budget import OutOfTime, one_budget
from utils.json_schemas import SchemaTooCostly
from utils.schemas import InputModel, Name

log = structlog.get_logger(__name__)


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
    # A check that may take up to its time budget (a tenant's pattern, a schema's validation):
    # scored in a thread, so the event loop serves every other case, request and heartbeat
    # meanwhile. So is a check over many long turns: each turn's work is bounded, and the
    # loop runs between them.
    slow: bool = False
    # A check whose work grows with the answer (times the values looked for, or the reference
    # compared with): scored in a thread when this says the observation is much work.
    heavy: Callable[[MetricSpec, Observation], bool] | None = None

    def __post_init__(self) -> None:
        scorer = self.check if self.kind == "check" else self.instructions
        other = self.instructions if self.kind == "check" else self.check
        if scorer is None or other is not None:
            raise TypeError(f"metric type {self.name}: a {self.kind} needs its own scorer only")
        if SCOPE in self.parameters.model_fields:
            raise TypeError(f"metric type {self.name}: `{SCOPE}` is every check's, not a type's")

    @property
    def judged(self) -> bool:
        return self.kind == "judge"

    def in_thread(self, spec: MetricSpec, obs: Observation) -> bool:
        """Whether this check of `obs` is scored off the event loop."""
        if self.slow or heavy_over_turns(spec, obs):
            return True
        return self.heavy is not None and self.heavy(spec, obs)


def _check(
    name: str, parameters: type[InputModel], check: Check, summary: str, **kw: Any
) -> MetricType:
    return MetricType(name, "check", parameters, summary, check=check, **kw)


def _text_check(
    name: str, parameters: type[InputModel], check: Check, summary: str, **kw: Any
) -> MetricType:
    return _check(name, parameters, check, summary, heavy=checks.reads_much, **kw)


def _judge(name: str, parameters: type[InputModel], asks: Instructions, summary: str) -> MetricType:
    return MetricType(name, "judge", parameters, summary, threshold=0.5, instructions=asks)


_TYPES: tuple[MetricType, ...] = (
    _text_check("equals", checks.ExpectedText, checks.equals, "The output equals the reference"),
    _text_check(
        "contains", checks.ExpectedText, checks.contains, "The output contains the reference"
    ),
    _text_check(
        "icontains", checks.ExpectedText, checks.icontains, "Contains the reference, any case"
    ),
    _text_check(
        "starts-with", checks.ExpectedText, checks.starts_with, "Starts with the reference"
    ),
    _text_check("contains-any", checks.TextList, checks.contains_any, "Contains one of the values"),
    _text_check(
        "contains-all",
        checks.TextList,
        checks.contains_all,
        "Contains every value (the score is the share found)",
    ),
    _check(
        "regex",
        checks.RegexParameters,
        checks.matches_regex,
        "Matches a regular expression",
        slow=True,
    ),
    _check("is-json", NoParameters, checks.is_json, "The output is JSON"),
    _check(
        "json-schema",
        checks.JsonSchemaParameters,
        checks.matches_json_schema,
        "The output is JSON valid against a schema",
        slow=True,
    ),
    _check(
        "similarity",
        checks.ExpectedText,
        checks.similarity,
        "Edit-distance similarity to the reference, 0 to 1",
        threshold=0.8,
        heavy=long_answers.compares_much,
    ),
    _check("max-latency", checks.MaxLatency, checks.max_latency, "The call took at most `ms`"),
    _check("max-cost", checks.MaxCost, checks.max_cost, "The call cost at most `usd`"),
    _check("max-tokens", checks.MaxTokens, checks.max_tokens, "At most `tokens` in and out"),
    _check(
        "word-count",
        checks.WordCount,
        long_answers.word_count,
        "Words between `min` and `max`",
        heavy=long_answers.counts_much,
    ),
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
        slow=True,
    ),
    _check(
        "tool-args-schema",
        NoParameters,
        agent_checks.tool_args_schema,
        "Every tool call's arguments are valid against its tool's parameters schema",
        slow=True,
    ),
    _check(
        "trajectory",
        agent_checks.TrajectoryParameters,
        agent_checks.trajectory,
        "The sequence of tool calls against the test's expected_tool_calls, by `mode`",
        slow=True,
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
    # Conversations: judged over the whole transcript (see conversation_judges.py).
    _judge(
        "goal-completion",
        NoParameters,
        conversation_judges.goal_completion,
        "A judge scores whether the conversation achieved the user's goal",
    ),
    _judge(
        "knowledge-retention",
        NoParameters,
        conversation_judges.knowledge_retention,
        "A judge scores whether the assistant remembers what the user said in earlier turns",
    ),
    _judge(
        "role-adherence",
        NoParameters,
        conversation_judges.role_adherence,
        "A judge scores whether the assistant stays in its role (its system prompt) every turn",
    ),
    _judge(
        "turn-relevance",
        NoParameters,
        conversation_judges.turn_relevance,
        "A judge scores the share of the assistant's turns relevant to the message before",
    ),
)

CATALOGUE: Mapping[str, MetricType] = MappingProxyType({t.name: t for t in _TYPES})
if len(CATALOGUE) != len(_TYPES):
    raise TypeError("a metric type is declared twice")


def is_judge(metric_type: str) -> bool:
    return CATALOGUE[metric_type].judged


class PerTestParameters(InputModel):
    """Instead of parameters of its own, a metric may take each test's: the test's metadata
    under `from_test` holds them (and may hold a `threshold`, and for a check a `scope` that
    overrides the metric's). A test without that key is not scored by the metric, so one metric
    can carry a different reference on every test (an imported promptfoo `assert` becomes such
    a metric)."""

    from_test: Name = Field(description="The metadata key holding each test's parameters")


FROM_TEST = "from_test"


@functools.cache
def _with_scope(model: type[InputModel]) -> type[InputModel]:
    scoped = create_model(
        f"{model.__name__}WithScope",
        __base__=model,
        __doc__=model.__doc__,
        scope=(Scope, Field(default="last", description=SCOPES)),
    )
    return cast(type[InputModel], scoped)


def accepted_parameters(metric_type: str, *, per_test: bool = False) -> type[InputModel]:
    """What a metric of this type takes as parameters: its type's own (or, `per_test`, where
    each test's are), and for a check its `scope`."""
    declared = CATALOGUE[metric_type]
    model = PerTestParameters if per_test else declared.parameters
    return model if declared.judged else _with_scope(model)


def _checked(metric_type: str, given: dict[str, Any], *, per_test: bool) -> dict[str, Any]:
    """The parameters validated, defaults filled in; `scope` kept only when given."""
    checked = accepted_parameters(metric_type, per_test=per_test).model_validate(given)
    dumped = checked.model_dump(by_alias=True, exclude_none=True)
    if SCOPE not in given:
        dumped.pop(SCOPE, None)
    return dumped


def _no_scope(metric_type: str) -> str:
    return (
        f"{metric_type} is a judge: it reads the whole conversation, so it takes no scope "
        "(a scope chooses the turns a check scores)"
    )


def validate_parameters(metric_type: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a metric type, checked; errors name `parameters.<field>`."""
    given = dict(parameters)
    refused: list[InitErrorDetails] = []
    if CATALOGUE[metric_type].judged and SCOPE in given:
        refused.append(_error((SCOPE,), _no_scope(metric_type), given.pop(SCOPE)))
    try:
        checked = _checked(metric_type, given, per_test=FROM_TEST in given)
    except ValidationError as exc:
        refused += [_error(e["loc"], e["msg"], e.get("input")) for e in exc.errors()]
    if refused:
        raise ValidationError.from_exception_data("MetricCreate", refused) from None
    return checked


def _error(loc: tuple[str | int, ...], message: str, given: Any) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("parameters", "{message}", {"message": message}),
        loc=("parameters", *loc),
        input=given,
    )


MAX_THRESHOLD = 1_000_000


def for_case(spec: MetricSpec, metadata: Mapping[str, Any]) -> MetricSpec | None:
    """The metric as it scores one test: with the test's own parameters when it takes them
    (see PerTestParameters; the metric's scope unless the test gives one), or None when the
    test does not give any."""
    key = spec.parameters.get(FROM_TEST)
    if key is None:
        return spec
    given = metadata.get(key)
    if given is None:
        return None
    parameters, threshold = given_parameters(spec.type, key, given)
    if SCOPE in spec.parameters:
        parameters.setdefault(SCOPE, spec.parameters[SCOPE])
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
    if CATALOGUE[metric_type].judged and SCOPE in parameters:
        raise ScoringError(f"{where}.{SCOPE}: {_no_scope(metric_type)}")
    try:
        checked = _checked(metric_type, parameters, per_test=False)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ScoringError(f"{where}{'.' + field if field else ''}: {first['msg']}") from None
    return checked, None if threshold is None else float(threshold)


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
            if metric_type.in_thread(spec, obs):
                loop = asyncio.get_running_loop()
                call = partial(_check_budgeted, spec, obs, metric_type.check)
                return await loop.run_in_executor(_CHECK_THREADS, call)
            return _check_budgeted(spec, obs, metric_type.check)
        if judge is None:
            raise ScoringError("no judge model: set judge_model_id or the project's default")
        verdict = await judge(judge_prompt(spec, obs))
    except (ScoringError, SchemaTooCostly) as exc:  # a tenant's schema: bounded, never hung
        return Verdict(score=0.0, reason=str(exc), error=str(exc))
    except RecursionError:  # an answer or a schema nesting past what a check can walk
        reason = "the answer or the check's schema nests too deep to be scored"
        return Verdict(score=0.0, reason=reason, error=reason)
    except Exception as exc:  # unforeseen: this case's metric errs, not the whole chunk
        log.exception("a metric failed to score", metric_type=spec.type)
        reason = f"the metric failed to score ({type(exc).__name__})"
        return Verdict(score=0.0, reason=reason, error=reason)
    if verdict.error is None:
        verdict.passed = decide(spec, verdict.score)
    return verdict


_CHECK_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="assay-check")


def _check_budgeted(spec: MetricSpec, obs: Observation, check: Check) -> Verdict:
    with one_budget():  # the check's schema validations, all together
        try:
            return check_in_scope(spec, obs, check)
        except OutOfTime as exc:  # a check's own pieces of work consult the budget too
            raise ScoringError(f"the check {exc}") from None
