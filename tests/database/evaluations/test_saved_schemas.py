"""Scoring with the JSON Schemas a team saved: a model's tools are not checked against their
metaschema on every result (only those called are made validators, once each), and a number
too large for a float `multipleOf` is a clear error of the check, not an unforeseen one."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from database.evaluations import saved_schemas
from database.evaluations.catalogue import score
from database.evaluations.scoring import MetricSpec, Observation, Verdict
from utils.json_schemas import bounded_validator


def spec(metric_type: str, **parameters: Any) -> MetricSpec:
    return MetricSpec(name=metric_type, type=metric_type, parameters=parameters, threshold=1.0)


async def scored(metric: MetricSpec, observation: Observation) -> Verdict:
    return await score(metric, observation, None)


def _tools(count: int, properties: int) -> list[dict[str, Any]]:
    """`count` tools of `properties` string properties each, unlike any other test's (the
    validators are kept by their schema's text)."""
    own = uuid.uuid4().hex[:8]
    return [
        {
            "type": "function",
            "function": {
                "name": f"t{k}",
                "parameters": {
                    "type": "object",
                    "properties": {
                        f"p{own}_{k}_{i}": {"type": "string", "description": "d"}
                        for i in range(properties)
                    },
                },
            },
        }
        for k in range(count)
    ]


@pytest.fixture
def metaschema_checks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Each schema checked against its metaschema by the bounded validators' class."""
    checked: list[Any] = []
    bounded = type(bounded_validator({"type": "object"}))
    real = bounded.check_schema

    def counted(cls: type, schema: Any, *args: Any, **kwargs: Any) -> None:
        checked.append(schema)
        real(schema, *args, **kwargs)

    monkeypatch.setattr(bounded, "check_schema", classmethod(counted))
    return checked


@pytest.fixture
def validators_made(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    made: list[Any] = []
    real = saved_schemas.bounded_validator

    def counted(schema: Any) -> Any:
        made.append(schema)
        return real(schema)

    monkeypatch.setattr(saved_schemas, "bounded_validator", counted)
    return made


async def test_a_valid_call_among_many_large_tools_passes_without_checking_the_tools(
    metaschema_checks: list[Any], validators_made: list[Any]
) -> None:
    # 128 tools of 38 properties: checking them all on every result spent the check's budget
    # (some 4.5 s) before the call was validated, and the valid call erred.
    tools = _tools(128, 38)
    observation = Observation(
        output="", input="q", tools=tools, tool_calls=[{"id": "1", "name": "t0", "arguments": {}}]
    )
    for _ in range(3):  # three results of the run
        verdict = await scored(spec("tool-args-schema"), observation)
        assert (verdict.error, verdict.passed) == (None, True), verdict.reason
    assert metaschema_checks == []
    assert validators_made == [tools[0]["function"]["parameters"]]  # the one called, once


async def test_each_tool_called_is_validated_with_its_own_schema(
    validators_made: list[Any],
) -> None:
    tools = _tools(3, 2)
    wrong = {"type": "function", "function": {"name": "ping", "parameters": {"type": "array"}}}
    calls = [
        {"id": "1", "name": "t2", "arguments": {}},
        {"id": "2", "name": "t1", "arguments": {}},
        {"id": "3", "name": "t2", "arguments": {}},
        {"id": "4", "name": "ping", "arguments": {}},
    ]
    observation = Observation(output="", input="q", tools=[*tools, wrong], tool_calls=calls)
    verdict = await scored(spec("tool-args-schema"), observation)
    assert verdict.score == pytest.approx(3 / 4)
    assert "call 4 (ping): {} is not of type 'array'" in verdict.reason
    assert len(validators_made) == 3  # t2, t1 and ping: once each


async def test_a_broken_tool_schema_is_an_error_naming_it_when_it_is_called() -> None:
    tools = [
        {"type": "function", "function": {"name": "good", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "bad", "parameters": {"type": "nope"}}},
    ]
    calls = [{"id": "1", "name": "good", "arguments": {}}]
    verdict = await scored(
        spec("tool-args-schema"), Observation("", "q", tools=tools, tool_calls=calls)
    )
    assert (verdict.error, verdict.passed) == (None, True)
    calls.append({"id": "2", "name": "bad", "arguments": {}})
    verdict = await scored(
        spec("tool-args-schema"), Observation("", "q", tools=tools, tool_calls=calls)
    )
    assert verdict.error is not None
    assert verdict.error.startswith("tool 'bad': not a valid JSON schema (UnknownType")


# --- a number too large for a float multipleOf -----------------------------------------------

HUGE = 10**400  # past a float, within the digits int() reads
HALVES = {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 0.5}}}


async def test_a_huge_number_against_a_float_multiple_of_is_an_error_saying_why() -> None:
    verdict = await scored(
        spec("json-schema", schema={"type": "number", "multipleOf": 0.5}),
        Observation(output=str(HUGE), input="q"),
    )
    said = "the answer holds a number too large to check against the schema's multipleOf"
    assert (verdict.error, verdict.reason) == (said, said)


@pytest.mark.parametrize(
    ("metric", "expected", "said"),
    [
        (
            spec("tool-args-schema"),
            None,
            "tool 'halve': the call's arguments hold a number too large to check against the"
            " schema's multipleOf",
        ),
        (
            spec("tool-call"),
            [{"name": "halve", "match": "schema", "arguments": HALVES}],
            "the test's expected_tool_calls[0].arguments: the call's arguments hold a number"
            " too large to check against the schema's multipleOf",
        ),
        (
            spec("trajectory", mode="any-order"),
            [{"name": "halve", "match": "schema", "arguments": HALVES}],
            "the test's expected_tool_calls[0].arguments: the call's arguments hold a number"
            " too large",
        ),
        (
            spec("tool-call", name="halve", match="schema", arguments=HALVES),
            None,
            "parameters.arguments: the call's arguments hold a number too large",
        ),
    ],
)
async def test_a_call_with_a_huge_number_against_a_float_multiple_of_is_an_error_saying_why(
    metric: MetricSpec, expected: list[dict[str, Any]] | None, said: str
) -> None:
    tools = [{"type": "function", "function": {"name": "halve", "parameters": HALVES}}]
    observation = Observation(
        output="",
        input="q",
        tools=tools,
        tool_calls=[{"id": "1", "name": "halve", "arguments": {"n": HUGE}}],
        expected_tool_calls=expected,
    )
    verdict = await scored(metric, observation)
    assert verdict.error is not None and verdict.error.startswith(said), verdict.error
