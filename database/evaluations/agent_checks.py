"""Deterministic checks of an agent's tool calls: each one's parameters and its scorer (declared
in catalogue.py).

An actual call is {"id", "name", "arguments"}: the arguments are the decoded JSON object, or the
raw text when the model sent something else (see Observation). An expected call is {"name",
"arguments"?, "match"}: without arguments any arguments do; with them, `exact` wants equal JSON
values, `subset` every expected key with an equal value (recursively, through nested objects),
and `schema` arguments valid against the JSON Schema given as `arguments`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

import jsonschema
import referencing.exceptions
from pydantic import AfterValidator, Field, StringConstraints, ValidationError, model_validator
from pydantic_core.core_schema import ValidationInfo

from database.evaluations.scoring import MetricSpec, Observation, ScoringError
from utils.json_schemas import (
    SchemaTooCostly,
    all_errors,
    bounded_validator,
    check_json_schema,
    first_error,
)
from utils.schemas import InputModel

# The calls and the expected calls one metric scores (the comparisons grow as their product).
MAX_CALLS = 500
MAX_EXPECTED = 100
MAX_ARGUMENTS_CHARS = 20_000  # the JSON of one expectation's arguments
SHOWN = 3  # calls named in a reason
CALL_CHARS = 120  # one call, as a reason shows it

Match = Literal["exact", "subset", "schema"]
Mode = Literal["exact", "in-order", "any-order", "subset", "superset"]
ToolName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Pairs = list[list[bool]]  # pairs[i][j]: the expected call i matches the actual call j
Score = tuple[float, str]


# --- parameters -----------------------------------------------------------------------------


def _checked_arguments(value: dict[str, Any] | None, info: ValidationInfo) -> Any:
    if value is not None and len(json.dumps(value)) > MAX_ARGUMENTS_CHARS:
        raise ValueError(f"at most {MAX_ARGUMENTS_CHARS:,} characters of JSON")
    if value is not None and info.data.get("match") == "schema":
        check_json_schema(value)
    return value


Arguments = Annotated[dict[str, Any] | None, AfterValidator(_checked_arguments)]
MATCHING = (
    "How `arguments` are compared: exact (equal JSON), subset (these keys with these values, "
    "recursively), or schema (`arguments` is a JSON Schema they must satisfy)"
)
ANY = "The arguments wanted (left out: any arguments)"


class ExpectedCall(InputModel):
    """One call the agent should make (a test's expected_tool_calls holds these)."""

    name: ToolName = Field(description="The tool's name")
    match: Match = Field(default="exact", description=MATCHING)
    arguments: Arguments = Field(default=None, description=ANY)

    @functools.cached_property
    def _schema(self) -> Any:
        return bounded_validator(self.arguments)

    def matches(self, call: dict[str, Any]) -> bool:
        if call.get("name") != self.name:
            return False
        arguments = call.get("arguments")
        if self.arguments is None or self.match == "schema":
            return self.arguments is None or first_error(self._schema, arguments) is None
        if not isinstance(arguments, dict):  # raw text matches no object
            return False
        return (_same if self.match == "exact" else within)(arguments, self.arguments)

    def __str__(self) -> str:
        if self.arguments is None:
            return self.name
        shown = _clip(f"{self.name}({_json(self.arguments)})")
        return shown if self.match == "exact" else f"{shown} [{self.match}]"


class ToolCallParameters(InputModel):
    """The call to look for, or (without `name`) each of the test's expected_tool_calls."""

    name: ToolName | None = Field(default=None, description="The tool's name")
    match: Match | None = Field(default=None, description=MATCHING + "; exact if left out")
    arguments: Arguments = Field(default=None, description=ANY)

    @model_validator(mode="after")
    def _a_call(self) -> ToolCallParameters:
        if self.name is None and (self.arguments is not None or self.match is not None):
            raise ValueError(
                "arguments and match describe the call named by `name`: give a name, or leave "
                "all three out to use the test's expected_tool_calls"
            )
        return self


class TrajectoryParameters(InputModel):
    mode: Mode = Field(
        default="exact",
        description="exact: the expected calls, in order, nothing else; in-order: the expected "
        "calls in this order, others between allowed; any-order: the expected calls in any "
        "order, nothing else; subset: only expected calls (some may be skipped); superset: "
        "every expected call (others allowed)",
    )


class StepCount(InputModel):
    max: int = Field(ge=1, le=10_000, description="The most model calls (steps) allowed")


# --- matching one call ----------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: 1 == 1.0, but true is not 1 and "1" is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, int | float):
        return isinstance(b, int | float) and a == b
    return type(a) is type(b) and a == b


def within(actual: Any, wanted: Any) -> bool:
    """Every key of `wanted` in `actual` with an equal value, recursively through objects."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            key in actual and within(actual[key], value) for key, value in wanted.items()
        )
    return _same(actual, wanted)


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _clip(text: str, limit: int = CALL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(call: dict[str, Any]) -> str:
    return _clip(f"{call.get('name')}({_json(call.get('arguments', ''))})")


def _listed(items: Iterable[object]) -> str:
    texts = [str(item) for item in items]
    more = f" and {len(texts) - SHOWN} more" if len(texts) > SHOWN else ""
    return ", ".join(texts[:SHOWN]) + more


# --- what is compared -----------------------------------------------------------------------


def _calls(obs: Observation) -> list[dict[str, Any]]:
    if len(obs.tool_calls) > MAX_CALLS:
        raise ScoringError(f"{len(obs.tool_calls)} tool calls; at most {MAX_CALLS} are scored")
    return [call if isinstance(call, dict) else {} for call in obs.tool_calls]


def _parsed(given: Any, where: str) -> ExpectedCall:
    try:
        return ExpectedCall.model_validate(given)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ScoringError(f"{where}{'.' + field if field else ''}: {first['msg']}") from None


def _expected(obs: Observation) -> list[ExpectedCall]:
    if obs.expected_tool_calls is None:
        raise ScoringError("no expected tool calls: give the test its expected_tool_calls")
    if len(obs.expected_tool_calls) > MAX_EXPECTED:
        raise ScoringError(f"more than {MAX_EXPECTED} expected tool calls")
    return [
        _parsed(call, f"the test's expected_tool_calls[{i}]")
        for i, call in enumerate(obs.expected_tool_calls)
    ]


def _pairs(expected: Sequence[ExpectedCall], calls: Sequence[dict[str, Any]]) -> Pairs:
    rows: dict[str, list[bool]] = {}  # the same expectation twice is compared once
    keys = [wanted.model_dump_json() for wanted in expected]
    try:
        for key, wanted in zip(keys, expected, strict=True):
            if key not in rows:
                rows[key] = [wanted.matches(call) for call in calls]
    except referencing.exceptions.Unresolvable as exc:  # a $ref to nowhere (none is fetched)
        raise ScoringError(f"an expected schema has a $ref to nowhere: {exc}") from None
    return [rows[key] for key in keys]


def _matching(pairs: Pairs, actual: int, seed: list[int | None] | None = None) -> list[int | None]:
    """A maximum one-to-one matching of expected calls to actual calls (augmenting paths):
    for each expected call, the actual call it is matched with, or None. An expected call that
    `seed` matches stays matched (to this call or another)."""
    matched: list[int | None] = list(seed) if seed else [None] * len(pairs)
    partner: list[int | None] = [None] * actual  # actual -> expected
    for i, j in enumerate(matched):
        if j is not None:
            partner[j] = i
    for start in (i for i, j in enumerate(matched) if j is None):
        reached_from: dict[int, int] = {}  # actual call -> the expected call that reached it
        queue, free = [start], None
        for i in queue:
            for j in (j for j, ok in enumerate(pairs[i]) if ok and j not in reached_from):
                reached_from[j], owner = i, partner[j]
                if owner is None:
                    free = j
                    break
                queue.append(owner)
            if free is not None:
                break
        while free is not None:  # flip the path's pairs
            i = reached_from[free]
            matched[i], partner[free], free = free, i, matched[i]
    return matched


def _in_order(pairs: Pairs, actual: int) -> list[int | None]:
    """The longest in-order match (LCS with the call-matching predicate): for each expected
    call, the actual call it holds it with, or None."""
    n = len(pairs)
    best = [[0] * (actual + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(actual - 1, -1, -1):
            best[i][j] = (
                best[i + 1][j + 1] + 1 if pairs[i][j] else max(best[i + 1][j], best[i][j + 1])
            )
    held: list[int | None] = [None] * n
    i = j = 0
    while i < n and j < actual:
        if pairs[i][j] and best[i][j] == best[i + 1][j + 1] + 1:
            held[i], i, j = j, i + 1, j + 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1
    return held


# --- scorers --------------------------------------------------------------------------------


def tool_call(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    if "name" in spec.parameters:
        expected = [_parsed(spec.parameters, "parameters")]
    elif obs.expected_tool_calls is None:
        raise ScoringError(
            "no tool call to look for: set parameters.name or the test's expected_tool_calls"
        )
    else:
        expected = _expected(obs)
    calls = _calls(obs)
    if not expected:  # the test expects no call at all
        if not calls:
            return 1.0, "no tool calls, as expected"
        return 0.0, f"expected no tool calls, got {len(calls)}: {_listed(map(_shown, calls))}"
    matched = _matching(_pairs(expected, calls), len(calls))
    missing = [wanted for wanted, j in zip(expected, matched, strict=True) if j is None]
    found = len(expected) - len(missing)
    if not missing:
        return 1.0, f"found {_listed(expected)}"
    return found / len(expected), (
        f"found {found} of {len(expected)} expected calls; missing {_listed(missing)}"
        + (f"; the calls were {_listed(map(_shown, calls))}" if calls else "; no tool calls")
    )


def _tool_schemas(obs: Observation) -> dict[str, Any]:
    """Each defined tool's arguments validator (a tool without `parameters` takes an object)."""
    validators: dict[str, Any] = {}
    for i, tool in enumerate(obs.tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ScoringError(f"tools[{i}] is not a function definition ({{'function': ...}})")
        schema = function.get("parameters")
        schema = {"type": "object"} if schema is None else schema
        try:
            validators[function["name"]] = bounded_validator(schema)
            validators[function["name"]].check_schema(schema)
        except (jsonschema.SchemaError, TypeError, SchemaTooCostly) as exc:
            why = exc.message if isinstance(exc, jsonschema.SchemaError) else str(exc)
            raise ScoringError(
                f"tool {function['name']!r}: not a valid JSON schema: {why}"
            ) from None
    return validators


def _invalid(validators: dict[str, Any], call: dict[str, Any]) -> str | None:
    """Why a call's arguments are not valid for its tool, or None when they are."""
    validator = validators.get(str(call.get("name")))
    if validator is None:
        return "no tool of that name is defined"
    try:
        error = jsonschema.exceptions.best_match(all_errors(validator, call.get("arguments")))
    except referencing.exceptions.Unresolvable as exc:
        raise ScoringError(f"tool {call.get('name')!r}: a $ref to nowhere: {exc}") from None
    return None if error is None else f"{error.message} (at arguments{error.json_path[1:]})"


def tool_args_schema(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    calls = _calls(obs)
    if not calls:
        return 1.0, "no tool calls"
    validators = _tool_schemas(obs)
    problems = [(i, why) for i, call in enumerate(calls, 1) if (why := _invalid(validators, call))]
    if not problems:
        return 1.0, f"all {len(calls)} calls have valid arguments"
    first, why = problems[0]
    return (len(calls) - len(problems)) / len(calls), (
        f"{len(problems)} of {len(calls)} calls invalid; call {first} "
        f"({calls[first - 1].get('name')}): {_clip(why, 300)}"
    )


def _exact(expected: list[ExpectedCall], calls: list[dict[str, Any]], pairs: Pairs) -> Score:
    n, m = len(expected), len(calls)
    wrong = [
        f"call {i + 1}: expected {expected[i]}, got {_shown(calls[i])}"
        for i in range(min(n, m))
        if not pairs[i][i]
    ]
    matched = min(n, m) - len(wrong)
    problems = wrong[:SHOWN]
    if n > m:
        problems.append(f"missing at the end: {_listed(expected[m:])}")
    if m > n:
        problems.append(f"extra at the end: {_listed(map(_shown, calls[n:]))}")
    if not problems:
        return 1.0, f"the {n} expected calls, in order" if n else "no tool calls, as expected"
    return matched / max(n, m), f"{matched} of {max(n, m)} positions match; " + "; ".join(problems)


def _ordered(expected: list[ExpectedCall], calls: list[dict[str, Any]], pairs: Pairs) -> Score:
    if not expected:
        return 1.0, "no calls expected"
    held = _in_order(pairs, len(calls))
    in_order = sum(j is not None for j in held)
    if in_order == len(expected):
        return 1.0, f"the {len(expected)} expected calls in order, among {len(calls)} calls"
    # The calls made but not in this order: those a largest matching adds to the order's.
    made = _matching(pairs, len(calls), seed=held)
    left = [i for i, j in enumerate(held) if j is None]
    problems = {
        "out of order": [expected[i] for i in left if made[i] is not None],
        "missing": [expected[i] for i in left if made[i] is None],
    }
    said = [f"{label}: {_listed(items)}" for label, items in problems.items() if items]
    return in_order / len(expected), (
        f"{in_order} of {len(expected)} expected calls in order; " + "; ".join(said)
    )


def _unordered(
    mode: Mode, expected: list[ExpectedCall], calls: list[dict[str, Any]], pairs: Pairs
) -> Score:
    """any-order, subset or superset, by a maximum one-to-one matching: a call made twice
    matches an expected call only once."""
    n, m = len(expected), len(calls)
    matched = _matching(pairs, m)
    found = sum(j is not None for j in matched)
    used = {j for j in matched if j is not None}
    missing = [str(wanted) for wanted, j in zip(expected, matched, strict=True) if j is None]
    extra = [_shown(call) for j, call in enumerate(calls) if j not in used]
    if mode == "any-order":
        total, problems = max(n, m), {"missing": missing, "extra": extra}
        said = f"{found} of {total} calls paired", f"the {n} expected calls, no others"
    elif mode == "subset":
        total, problems = m, {"not expected": extra}
        said = f"{found} of {m} calls expected", f"only expected calls ({found} of {n} made)"
    else:
        total, problems = n, {"missing": missing}
        said = f"{found} of {n} expected calls made", f"all {n} expected calls (and {m - n} more)"
    wrong = [f"{label}: {_listed(items)}" for label, items in problems.items() if items]
    return (found / total, "; ".join([said[0], *wrong])) if wrong else (1.0, said[1])


def trajectory(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    mode: Mode = spec.parameters.get("mode", "exact")
    expected, calls = _expected(obs), _calls(obs)
    pairs = _pairs(expected, calls)
    if mode == "exact":
        return _exact(expected, calls, pairs)
    if mode == "in-order":
        return _ordered(expected, calls, pairs)
    return _unordered(mode, expected, calls, pairs)


def step_count(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    steps, limit = len(obs.trajectory), spec.parameters["max"]
    if steps <= limit:
        return 1.0, f"{steps} steps"
    return 0.0, f"{steps} steps > {limit}"
