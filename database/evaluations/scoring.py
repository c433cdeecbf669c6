"""What scoring speaks of: a metric as a run froze it, what is scored, and the verdict."""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from utils.schemas import InputModel

Operator = Literal[">=", ">", "<=", "<", "=="]
COMPARATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}


@dataclass(frozen=True)
class MetricSpec:
    """A metric as a run froze it at start: later edits of the definition don't change runs."""

    name: str
    type: str
    parameters: dict[str, Any]
    threshold: float
    operator: str = ">="
    negate: bool = False
    weight: float = 1.0
    id: str | None = None
    judge_model_id: str | None = None


@dataclass(frozen=True)
class Observation:
    """What is scored: the case and what the target answered."""

    output: str
    input: str
    expected: str | None = None
    context: list[str] = field(default_factory=list)
    latency_ms: float | None = 0.0  # None: no call was timed (a recorded or cached answer)
    cost: float | None = None
    tokens: int | None = None
    # Agents: every tool call in order over all steps ({"id", "name", "arguments"}), the
    # steps themselves ({"text", "tool_calls", "tool_results": [{"id", "name", "content"}]}),
    # what the test expects ({"name", "arguments"?, "match": exact|subset|schema}), and the
    # target's tool definitions (OpenAI tools format).
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    expected_tool_calls: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    # Conversations: every turn in order ({"turn": n, "user": the user's message, "text": the
    # target's answer, "tool_calls"}), the (simulated) user's goal, and the role the target
    # was given (its system prompt), when known. `output` is the last turn's answer.
    turns: list[dict[str, Any]] = field(default_factory=list)
    goal: str | None = None
    role: str | None = None


@dataclass
class Verdict:
    score: float
    reason: str
    passed: bool = False
    error: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: float | None = None


class JudgeVerdict(BaseModel):
    """What a judge must answer."""

    score: float = Field(ge=0, le=1, description="0 = fails the criteria, 1 = fully meets them")
    reason: str = Field(max_length=4000, description="One or two sentences of justification")

    @field_validator("score", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        # JSON's true would otherwise be read as a score of 1.
        if isinstance(value, bool):
            raise ValueError("a score is a number, not true or false")
        return value


class ScoringError(Exception):
    """The metric cannot score this observation (the verdict carries the reason as an error)."""


class NoParameters(InputModel):
    pass


# A deterministic check: the score and the reason for it.
Check = Callable[[MetricSpec, Observation], tuple[float, str]]
# What a judge is asked, for one observation.
Instructions = Callable[[MetricSpec, Observation], str]
# A judge: asks a model and returns its verdict (the engine's; see app/engine/judges.py).
Judge = Callable[[str], Awaitable[Verdict]]


def higher_passes(operator: str, negate: bool) -> bool | None:
    """Whether a higher score is the better one under a metric's rule: True for >= and >,
    False for <= and < (a negated rule the other way round), None for == (no direction)."""
    if operator == "==":
        return None
    return (operator in (">=", ">")) != negate


def decide(spec: MetricSpec, score: float) -> bool:
    passed = COMPARATORS[spec.operator](score, spec.threshold)
    return not passed if spec.negate else passed


def turn_observations(obs: Observation) -> list[Observation]:
    """Each turn of a conversation as one answer to check: the turn's user message, its answer,
    its tool calls and steps, and its latency and tokens when the turn records them (else the
    conversation's, as its cost and everything the test gives are)."""
    observed = []
    for turn in obs.turns:
        calls = turn.get("tool_calls") or []
        text = turn.get("text") or ""
        latency = turn.get("latency_ms")
        tokens_in, tokens_out = turn.get("input_tokens"), turn.get("output_tokens")
        tokens = obs.tokens
        if isinstance(tokens_in, int) and isinstance(tokens_out, int):
            tokens = tokens_in + tokens_out
        observed.append(
            replace(
                obs,
                output=text,
                input=turn.get("user") or "",
                tool_calls=calls,
                trajectory=turn.get("steps") or [{"text": text, "tool_calls": calls}],
                latency_ms=obs.latency_ms if latency is None or obs.latency_ms is None else latency,
                tokens=tokens,
                turns=[],
            )
        )
    return observed
