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
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core.core_schema import ValidationInfo

from database.evaluations.call_matching import (
    Pairs,
    largest_matching,
    longest_in_order,
    same_json,
    within,
)
from database.evaluations.saved_schemas import kept_validator, schema_use
from database.evaluations.scoring import MetricSpec, Observation, ScoringError
from utils.check_budget import CHECK_SECONDS, seconds_left
from utils.json_schemas import (
    SchemaTooCostly,
    all_errors,
    bounded_validator,
    first_error,
)
from utils.save_checks import schema_in_body
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
Score = tuple[float, str]


# --- parameters -----------------------------------------------------------------------------


def _checked_arguments(value: dict[str, Any] | None, info: ValidationInfo) -> Any:
    if value is not None and len(json.dumps(value)) > MAX_ARGUMENTS_CHARS:
        raise ValueError(f"at most {MAX_ARGUMENTS_CHARS:,} characters of JSON")
    if value is not None and info.data.get("match") == "schema":
        schema_in_body(value)
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
            return self.arguments is None or self._valid(arguments)
        if not isinstance(arguments, dict):  # raw text matches no object
            return False
        return (same_json if self.match == "exact" else within)(arguments, self.arguments)

    def _valid(self, arguments: Any) -> bool:
        with schema_use():
            return first_error(self._schema, arguments) is None

    def __str__(self) -> str:
        if self.arguments is None:
            return self.name
        shown = _clip(f"{self.name}({_json(self.arguments)})")
        return shown if self.match == "exact" else f"{shown} [{self.match}]"


class _SavedCall(BaseModel):
    """An expected call as scoring reads it: its shape (a test saved before a rule may hold
    anything), not its text or its schema again. They were checked when it was saved, and the
    metaschema's check (some 4 ms a KB, outside any budget) of each on every result scored held
    a check thread 40 s for a test of 100 large schemas. A broken schema errs when it is used
    (see saved_schemas.schema_use)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: ToolName
    match: Match = "exact"
    arguments: dict[str, Any] | None = None


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


# --- showing calls ----------------------------------------------------------------------------


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
        return ExpectedCall.model_construct(**dict(_SavedCall.model_validate(given)))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ScoringError(f"{where}{'.' + field if field else ''}: {first['msg']}") from None


def _expected(obs: Observation) -> list[ExpectedCall]:
    if obs.expected_tool_calls is None:
        raise ScoringError("no expected tool calls: give the test its expected_tool_calls")
    if len(obs.expected_tool_calls) > MAX_EXPECTED:
        raise ScoringError(f"more than {MAX_EXPECTED} expected tool calls")
    expected = []
    for i, call in enumerate(obs.expected_tool_calls):
        seconds_left(CHECK_SECONDS)  # OutOfTime once the check's budget is spent
        expected.append(_parsed(call, _TESTS.format(i)))
    return expected


_TESTS = "the test's expected_tool_calls[{}]"  # where an expected call of the test is


def _pairs(
    expected: Sequence[ExpectedCall], calls: Sequence[dict[str, Any]], where: str = _TESTS
) -> Pairs:
    """Which expected call matches which call; ScoringError naming the expectation (`where`,
    formatted with its index) whose schema cannot be used."""
    rows: dict[str, list[bool]] = {}  # the same expectation twice is compared once
    keys = [json.dumps([wanted.name, wanted.match, wanted.arguments]) for wanted in expected]
    for i, (key, wanted) in enumerate(zip(keys, expected, strict=True)):
        if key in rows:
            continue
        row = rows[key] = []
        for call in calls:
            seconds_left(CHECK_SECONDS)  # a comparison may walk large arguments
            try:
                row.append(wanted.matches(call))
            except ScoringError as exc:
                raise ScoringError(f"{where.format(i)}.arguments: {exc}") from None
    return [rows[key] for key in keys]


# --- scorers --------------------------------------------------------------------------------


def tool_call(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    if "name" in spec.parameters:
        expected, where = [_parsed(spec.parameters, "parameters")], "parameters"
    elif obs.expected_tool_calls is None:
        raise ScoringError(
            "no tool call to look for: set parameters.name or the test's expected_tool_calls"
        )
    else:
        expected, where = _expected(obs), _TESTS
    calls = _calls(obs)
    if not expected:  # the test expects no call at all
        if not calls:
            return 1.0, "no tool calls, as expected"
        return 0.0, f"expected no tool calls, got {len(calls)}: {_listed(map(_shown, calls))}"
    matched = largest_matching(_pairs(expected, calls, where), len(calls))
    missing = [wanted for wanted, j in zip(expected, matched, strict=True) if j is None]
    found = len(expected) - len(missing)
    if not missing:
        return 1.0, f"found {_listed(expected)}"
    return found / len(expected), (
        f"found {found} of {len(expected)} expected calls; missing {_listed(missing)}"
        + (f"; the calls were {_listed(map(_shown, calls))}" if calls else "; no tool calls")
    )


def _tool_schemas(obs: Observation) -> dict[str, Any]:
    """Each defined tool's JSON Schema of its arguments (a tool without `parameters` takes an
    object). They were checked when the model was saved: a validator is made of those called
    only (`_invalid`)."""
    schemas: dict[str, Any] = {}
    for i, tool in enumerate(obs.tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ScoringError(f"tools[{i}] is not a function definition ({{'function': ...}})")
        schema = function.get("parameters")
        schemas[function["name"]] = {"type": "object"} if schema is None else schema
    return schemas


def _invalid(
    schemas: dict[str, Any], validators: dict[str, Any], call: dict[str, Any]
) -> str | None:
    """Why a call's arguments are not valid for its tool, or None when they are; `validators`
    keeps those of the tools called so far."""
    name = str(call.get("name"))
    if name not in schemas:
        return "no tool of that name is defined"
    try:
        with schema_use():
            if name not in validators:
                validators[name] = kept_validator(schemas[name])
            errors = all_errors(validators[name], call.get("arguments"))
    except (ScoringError, SchemaTooCostly) as exc:
        raise ScoringError(f"tool {name!r}: {exc}") from None
    error = jsonschema.exceptions.best_match(errors)
    return None if error is None else f"{error.message} (at arguments{error.json_path[1:]})"


def tool_args_schema(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    calls = _calls(obs)
    if not calls:
        return 1.0, "no tool calls"
    schemas = _tool_schemas(obs)
    validators: dict[str, Any] = {}
    problems = [
        (i, why) for i, call in enumerate(calls, 1) if (why := _invalid(schemas, validators, call))
    ]
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
    held = longest_in_order(pairs, len(calls))
    in_order = sum(j is not None for j in held)
    if in_order == len(expected):
        return 1.0, f"the {len(expected)} expected calls in order, among {len(calls)} calls"
    # The calls made but not in this order: those a largest matching adds to the order's.
    made = largest_matching(pairs, len(calls), seed=held)
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
    matched = largest_matching(pairs, m)
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
