"""Tenants' JSON Schemas: checked, and validated with patterns that cannot hang the process."""

from __future__ import annotations

import time

import pytest

from database.evaluations.catalogue import score
from database.evaluations.scoring import MetricSpec, Observation
from utils.json_schemas import SchemaTooCostly, bounded_validator, check_json_schema

EVIL = "^(a|a)*$"  # backtracks exponentially on "aaaa...!", in re and in regex alike
SLOW_TEXT = "a" * 40 + "!"


def test_a_schema_is_checked_saying_where_it_is_wrong() -> None:
    assert check_json_schema({"type": "object"}) == {"type": "object"}
    with pytest.raises(ValueError, match="not a valid JSON schema at properties/x/type"):
        check_json_schema({"properties": {"x": {"type": 5}}})


def test_patterns_still_validate() -> None:
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
        "patternProperties": {"^x-": {"type": "integer"}},
        "additionalProperties": False,
    }
    validator = bounded_validator(schema)
    assert validator.is_valid({"code": "ABC", "x-count": 3})
    messages = sorted(
        error.message for error in validator.iter_errors({"code": "abc", "x-a": "s", "y": 1})
    )
    assert messages == [
        "'abc' does not match '^[A-Z]{3}$'",
        "'s' is not of type 'integer'",
        "additional properties are not allowed ('y' unexpected)",
    ]


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ({"type": "string", "pattern": EVIL}, SLOW_TEXT),
        ({"type": "object", "patternProperties": {EVIL: {}}}, {SLOW_TEXT: 1}),
        (
            {"type": "object", "patternProperties": {EVIL: {}}, "additionalProperties": False},
            {SLOW_TEXT: 1},
        ),
        ({"type": "object", "propertyNames": {"pattern": EVIL}}, {SLOW_TEXT: 1}),
    ],
)
def test_a_backtracking_pattern_is_stopped_quickly(schema: dict, instance: object) -> None:
    started = time.process_time()
    with pytest.raises(SchemaTooCostly, match="took longer than"):
        list(bounded_validator(schema).iter_errors(instance))
    assert time.process_time() - started < 3


async def test_a_tools_backtracking_pattern_is_a_metric_error_not_a_hang() -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "find", "parameters": {"properties": {"q": {"pattern": EVIL}}}},
        }
    ]
    observation = Observation(
        output="",
        input="x",
        tool_calls=[{"id": "1", "name": "find", "arguments": {"q": SLOW_TEXT}}],
        tools=tools,
    )
    spec = MetricSpec(name="args", type="tool-args-schema", parameters={}, threshold=1.0)
    started = time.process_time()
    verdict = await score(spec, observation, None)
    assert verdict.error is not None and "took longer than" in verdict.error
    assert time.process_time() - started < 3
