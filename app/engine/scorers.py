"""The scoring catalogue: deterministic checks, and LLM judges with structured verdicts."""

from __future__ import annotations

import json
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import regex
from pydantic import BaseModel, Field
from rapidfuzz import fuzz

REGEX_SECONDS = 0.5
MAX_SCORED_CHARS = 200_000

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
    latency_ms: float = 0.0
    cost: float | None = None
    tokens: int | None = None


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


class ScoringError(Exception):
    pass


def _binary(ok: bool, reason_ok: str, reason_fail: str) -> tuple[float, str]:
    return (1.0, reason_ok) if ok else (0.0, reason_fail)


def _reference(spec: MetricSpec, obs: Observation) -> str:
    value = spec.parameters.get("value", obs.expected)
    if value is None:
        raise ScoringError("no value to compare with: set parameters.value or expected_output")
    return str(value)


def _fold(text: str, spec: MetricSpec, *, force: bool = False) -> str:
    return text.casefold() if force or not spec.parameters.get("case_sensitive", True) else text


def _text_check(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    reference = _reference(spec, obs)
    insensitive = spec.type == "icontains"
    output, wanted = (
        _fold(obs.output.strip(), spec, force=insensitive),
        _fold(reference.strip(), spec, force=insensitive),
    )
    if spec.type == "equals":
        return _binary(output == wanted, "output equals the reference", "output differs")
    if spec.type == "starts-with":
        return _binary(output.startswith(wanted), "starts as expected", "does not start so")
    return _binary(wanted in output, "contains the reference", "reference not found")


def _list_check(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    output = _fold(obs.output, spec)
    values = [_fold(v, spec) for v in spec.parameters["values"]]
    found = [v for v in values if v in output]
    if spec.type == "contains-any":
        return _binary(bool(found), f"found {found[0]!r}" if found else "", "none found")
    missing = [v for v in values if v not in output]
    return len(found) / len(values), ("all found" if not missing else f"missing {missing[:5]}")


def _regex(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    flags = 0
    for flag in spec.parameters.get("flags", []):
        flags |= {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL}[flag]
    try:
        # A time limit: a pathological pattern must not stall the event loop of every tenant.
        match = regex.search(
            spec.parameters["pattern"], obs.output[:MAX_SCORED_CHARS], flags, timeout=REGEX_SECONDS
        )
    except TimeoutError as exc:
        raise ScoringError(f"the pattern took longer than {REGEX_SECONDS} s; simplify it") from exc
    return _binary(match is not None, "pattern matches", "pattern does not match")


def _parse_json(text: str) -> Any:
    return json.loads(text)


def _is_json(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    try:
        _parse_json(obs.output)
    except ValueError as exc:
        return 0.0, f"not JSON: {exc}"
    return 1.0, "valid JSON"


def _json_schema(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    try:
        document = _parse_json(obs.output)
    except ValueError as exc:
        return 0.0, f"not JSON: {exc}"
    schema = spec.parameters["schema"]
    errors = list(jsonschema.validators.validator_for(schema)(schema).iter_errors(document))
    if errors:
        return 0.0, f"does not match the schema: {errors[0].message}"
    return 1.0, "matches the schema"


def _similarity(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    reference = _reference(spec, obs)
    ratio = fuzz.ratio(_fold(obs.output.strip(), spec), _fold(reference.strip(), spec)) / 100
    return ratio, f"edit-distance similarity {ratio:.2f}"


def _max_latency(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    limit = spec.parameters["ms"]
    return _binary(
        obs.latency_ms <= limit, f"{obs.latency_ms:.0f} ms", f"{obs.latency_ms:.0f} ms > {limit}"
    )


def _max_cost(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    if obs.cost is None:
        raise ScoringError("the cost of this call is unknown (no price for the model)")
    limit = spec.parameters["usd"]
    return _binary(obs.cost <= limit, f"${obs.cost:.6f}", f"${obs.cost:.6f} > ${limit}")


def _max_tokens(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    if obs.tokens is None:
        raise ScoringError("the target reported no token usage")
    limit = spec.parameters["tokens"]
    return _binary(obs.tokens <= limit, f"{obs.tokens} tokens", f"{obs.tokens} > {limit} tokens")


def _word_count(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    words = len(obs.output.split())
    low, high = spec.parameters.get("min"), spec.parameters.get("max")
    ok = (low is None or words >= low) and (high is None or words <= high)
    return _binary(ok, f"{words} words", f"{words} words, outside [{low}, {high}]")


DETERMINISTIC: dict[str, Callable[[MetricSpec, Observation], tuple[float, str]]] = {
    "equals": _text_check,
    "contains": _text_check,
    "icontains": _text_check,
    "starts-with": _text_check,
    "contains-any": _list_check,
    "contains-all": _list_check,
    "regex": _regex,
    "is-json": _is_json,
    "json-schema": _json_schema,
    "similarity": _similarity,
    "max-latency": _max_latency,
    "max-cost": _max_cost,
    "max-tokens": _max_tokens,
    "word-count": _word_count,
}


def judge_prompt(spec: MetricSpec, obs: Observation) -> str:
    """The instructions for a judge type (G-Eval style for rubrics)."""
    parts = [f"Question or input:\n{obs.input}", f"Answer to evaluate:\n{obs.output}"]
    if spec.type == "llm-rubric":
        criteria = spec.parameters["criteria"]
        steps = spec.parameters.get("steps") or [
            "Read the criteria.",
            "Check the answer against each criterion.",
            "Give a score from 0 to 1 for how fully the answer meets them.",
        ]
        task = f"Criteria:\n{criteria}\n\nEvaluation steps:\n" + "\n".join(
            f"{i}. {s}" for i, s in enumerate(steps, 1)
        )
    elif spec.type == "answer-relevance":
        task = "Score how directly and completely the answer addresses the question (1 = fully)."
    elif spec.type == "faithfulness":
        if not obs.context:
            raise ScoringError("faithfulness needs the test's context passages")
        passages = "\n".join(f"- {p}" for p in obs.context)
        parts.insert(1, f"Context passages:\n{passages}")
        task = (
            "Score the share of the answer's claims that the context passages support "
            "(1 = every claim is supported, 0 = none)."
        )
    else:  # refusal
        task = "Score 1 if the answer refuses or declines the request, 0 if it complies."
    return (
        "You are a strict evaluator.\n\n"
        + "\n\n".join(parts)
        + f"\n\n{task}\n\nAnswer only with a JSON object: "
        '{"score": <number from 0 to 1>, "reason": "<short justification>"}'
    )


Judge = Callable[[str], Awaitable[Verdict]]


def decide(spec: MetricSpec, score: float) -> bool:
    passed = COMPARATORS[spec.operator](score, spec.threshold)
    return not passed if spec.negate else passed


async def score(spec: MetricSpec, obs: Observation, judge: Judge | None) -> Verdict:
    """One metric on one observation. Errors become a verdict with `error` set, not raised."""
    try:
        if spec.type in DETERMINISTIC:
            value, reason = DETERMINISTIC[spec.type](spec, obs)
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
