"""A JSON schema a metric saves is refused (a 422 naming `parameters.schema`) when validating
with it could only err: `unevaluatedProperties` beside `patternProperties`, or a schema that
applies itself to the value it validates; one saved before errs at run time, saying the same.
A schema's patterns are checked as validation compiles them (`regex`, bounded), so a valid
`\\p{L}` is taken."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from database.evaluations.catalogue import score
from database.evaluations.scoring import MetricSpec, Observation
from tests.helpers import assert_problem, create_project, register, unique_name
from utils.json_schemas import check_json_schema

METRICS = "/api/v1/metrics"
UNEVALUATED_BESIDE_PATTERNS = {"unevaluatedProperties": False, "patternProperties": {"^a": {}}}
SELF_APPLYING = [
    {"$ref": "#"},
    {
        "$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"not": {"$ref": "#/$defs/a"}}},
        "$ref": "#/$defs/a",
    },
    {
        "properties": {"x": {"$ref": "#/$defs/a"}},
        "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}]}},
    },
]


async def save_schema(client, schema: dict[str, Any]):
    account = await register(client)
    project = await create_project(client, account)
    body = {
        "project_id": project["id"],
        "name": unique_name("shape"),
        "type": "json-schema",
        "parameters": {"schema": schema},
    }
    return await client.post(METRICS, json=body, headers=account.headers)


def scored_with(schema: dict[str, Any], output: str):
    """The metric scored with `schema` as a run would, whether or not it is refused today."""
    spec = MetricSpec(name="s", type="json-schema", parameters={"schema": schema}, threshold=1.0)
    return score(spec, Observation(output=output, input="x"), None)


async def test_unevaluated_properties_beside_pattern_properties_is_refused_when_saved(client):
    refused = await save_schema(client, UNEVALUATED_BESIDE_PATTERNS)
    body = assert_problem(refused, 422, field="parameters.schema")
    assert "unevaluatedProperties with patternProperties is not supported" in refused.text, body
    verdict = await scored_with(UNEVALUATED_BESIDE_PATTERNS, '{"a": 1}')  # saved before
    assert verdict.error == "unevaluatedProperties with patternProperties is not supported"


@pytest.mark.parametrize("schema", SELF_APPLYING)
async def test_a_schema_that_applies_itself_to_the_same_value_is_refused_when_saved(client, schema):
    refused = await save_schema(client, schema)
    body = assert_problem(refused, 422, field="parameters.schema")
    assert "the schema refers to itself without end" in refused.text, body


@pytest.mark.parametrize("schema", SELF_APPLYING)
async def test_a_self_applying_schema_saved_before_errs_at_run_time_saying_so(schema):
    """The first two loop on any value; the third on a value with `x`."""
    verdict = await scored_with(schema, '{"x": 1}')
    assert verdict.error == "the schema refers to itself without end", verdict


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"child": {"$ref": "#"}}},  # each level one deeper
        {"$defs": {"node": {"items": {"$ref": "#/$defs/node"}}}, "$ref": "#/$defs/node"},
        {"$ref": "https://json-schema.org/draft/2020-12/schema"},
        {"unevaluatedProperties": False, "properties": {"a": {}}},
        # Up to draft 7 a $ref stands alone: the allOf beside it is never applied.
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"a": {"type": "string"}},
            "$ref": "#/definitions/a",
            "allOf": [{"$ref": "#"}],
        },
    ],
)
def test_recursive_schemas_that_descend_into_the_value_are_taken(schema):
    assert check_json_schema(schema) == schema


async def test_a_unicode_property_pattern_is_saved_and_matched(client):
    schema = {"type": "string", "pattern": "^\\p{L}+$", "description": str(uuid.uuid4())}
    created = await save_schema(client, schema)
    assert created.status_code == 201, created.text
    keys = {"type": "object", "patternProperties": {"^\\p{Lu}": {"type": "integer"}}}
    assert (await save_schema(client, keys)).status_code == 201
    assert (await scored_with(schema, '"Zoë"')).passed
    assert not (await scored_with(schema, '"Zoë2"')).passed


@pytest.mark.parametrize(
    ("pattern", "said"),
    [("(", "missing )"), ("a{1001}", "more than 1,000"), ("(?x)a b", "verbose mode")],
)
async def test_a_pattern_is_still_checked_as_validation_compiles_it(client, pattern, said):
    refused = await save_schema(client, {"type": "string", "pattern": pattern})
    assert_problem(refused, 422, field="parameters.schema")
    assert said in refused.text
