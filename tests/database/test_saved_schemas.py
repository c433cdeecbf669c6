"""Saving a test's expected arguments or a model's tools checks their JSON Schemas in the
save-check threads, never on the event loop while the body is parsed (100 schemas of 20 KB held
it 37 s), each distinct schema once, and all of a body's schemas within one bound."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from database.tests.agent_fields import ExpectedToolCall
from tests.helpers import assert_problem, create_model, create_project, register, unique_name
from utils.save_checks import MAX_BODY_SUBSCHEMAS

TESTS = "/api/v1/tests"
MODELS = "/api/v1/models"


def fresh_schema(**extra: Any) -> dict[str, Any]:
    """A schema no test checked before (verdicts are kept for the process)."""
    return {"type": "object", "description": str(uuid.uuid4()), **extra}


def expect(schema: Any) -> dict[str, Any]:
    return {"name": "lookup", "match": "schema", "arguments": schema}


def tool(index: int, schema: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": f"t{index}", "parameters": schema}}


def off_the_loop(threads: list[str]) -> bool:
    return bool(threads) and all(name.startswith("save-check") for name in threads)


async def test_a_tests_schemas_are_checked_off_the_loop_once_each(client, metaschema_checks):
    account = await register(client)
    project = await create_project(client, account)
    schema = fresh_schema(properties={"q": {"type": "string"}})
    body = {"project_id": project["id"], "input": "hi", "expected_tool_calls": [expect(schema)]}
    body["expected_tool_calls"] *= 100
    created = await client.post(TESTS, json=body, headers=account.headers)
    assert created.status_code == 201, created.text
    assert len(metaschema_checks) == 1
    assert off_the_loop(metaschema_checks), metaschema_checks

    edited = await client.patch(
        f"{TESTS}/{created.json()['id']}",
        json={"expected_tool_calls": [expect(fresh_schema())]},
        headers=account.headers,
    )
    assert edited.status_code == 200, edited.text
    assert len(metaschema_checks) == 2
    assert off_the_loop(metaschema_checks), metaschema_checks


async def test_a_tests_bad_or_too_many_schemas_are_a_422_naming_the_field(client):
    account = await register(client)
    project = await create_project(client, account)
    calls = [expect(fresh_schema()), expect(fresh_schema(properties={"q": {"type": 5}}))]
    body = {"project_id": project["id"], "input": "hi", "expected_tool_calls": calls}
    refused = await client.post(TESTS, json=body, headers=account.headers)
    problem = assert_problem(refused, 422, field="expected_tool_calls.1.arguments")
    assert "not a valid JSON schema at properties/q/type" in problem["detail"]

    each = MAX_BODY_SUBSCHEMAS // 10 + 1
    body["expected_tool_calls"] = [expect(fresh_schema(allOf=[{}] * (each - 1)))] * 2 + [
        expect(fresh_schema(allOf=[{}] * (each - 1))) for _ in range(9)
    ]
    refused = await client.post(TESTS, json=body, headers=account.headers)
    assert_problem(refused, 422, field="expected_tool_calls")
    listed = await client.get(TESTS, params={"project_id": project["id"]}, headers=account.headers)
    assert listed.json()["items"] == []


async def test_bulk_tests_schemas_are_checked_off_the_loop_naming_the_one_at_fault(
    client, metaschema_checks
):
    account = await register(client)
    project = await create_project(client, account)
    shared = fresh_schema(properties={"q": {"type": "string"}})
    tests = [{"input": f"t{i}", "expected_tool_calls": [expect(shared)]} for i in range(50)]
    body = {"project_id": project["id"], "tests": tests}
    created = await client.post(f"{TESTS}/bulk", json=body, headers=account.headers)
    assert created.status_code == 201, created.text
    assert len(metaschema_checks) == 1
    assert off_the_loop(metaschema_checks), metaschema_checks

    tests[7] = {"input": "bad", "expected_tool_calls": [expect(fresh_schema(required=5))]}
    refused = await client.post(f"{TESTS}/bulk", json=body, headers=account.headers)
    assert_problem(refused, 422, field="tests.7.expected_tool_calls.0.arguments")
    listed = await client.get(TESTS, params={"project_id": project["id"]}, headers=account.headers)
    assert listed.json()["total"] == 50  # the first 50; none of the refused body


async def test_a_metrics_schema_is_checked_off_the_loop_naming_it(client, metaschema_checks):
    account = await register(client)
    project = await create_project(client, account)
    body = {
        "project_id": project["id"],
        "name": unique_name("shape"),
        "type": "json-schema",
        "parameters": {"schema": fresh_schema(properties={"q": {"type": "string"}})},
    }
    created = await client.post("/api/v1/metrics", json=body, headers=account.headers)
    assert created.status_code == 201, created.text
    edited = await client.patch(
        f"/api/v1/metrics/{created.json()['id']}",
        json={"parameters": {"schema": fresh_schema()}},
        headers=account.headers,
    )
    assert edited.status_code == 200, edited.text
    assert len(metaschema_checks) == 2
    assert off_the_loop(metaschema_checks), metaschema_checks
    body["parameters"] = {"schema": fresh_schema(required=5)}
    refused = await client.post("/api/v1/metrics", json=body, headers=account.headers)
    assert_problem(refused, 422, field="parameters.schema")


async def test_a_models_tools_are_checked_off_the_loop_once_each(client, metaschema_checks):
    account = await register(client)
    schema = fresh_schema(properties={"q": {"type": "string"}})
    tools = [tool(index, schema) for index in range(90)]
    body = {"name": unique_name("m"), "provider": "demo", "tools": tools}
    created = await client.post(MODELS, json=body, headers=account.headers)
    assert created.status_code == 201, created.text
    assert len(metaschema_checks) == 1
    assert off_the_loop(metaschema_checks), metaschema_checks

    model = await create_model(client, account)
    bad = [tool(0, fresh_schema()), tool(1, fresh_schema(required="q"))]
    refused = await client.patch(
        f"{MODELS}/{model['id']}", json={"tools": bad}, headers=account.headers
    )
    assert_problem(refused, 422, field="tools.1.function.parameters")
    assert len(metaschema_checks) == 3
    assert off_the_loop(metaschema_checks), metaschema_checks


async def test_schemas_validated_elsewhere_are_still_checked_as_they_are_parsed(client):
    """A route's handler checking its body's schemas leaves the rest as it was: an import's
    cases (parsed in the import threads) are checked by their validators."""
    account = await register(client)
    project = await create_project(client, account)
    body = {"project_id": project["id"], "input": "hi", "expected_tool_calls": []}
    created = await client.post(TESTS, json=body, headers=account.headers)
    assert created.status_code == 201, created.text
    with pytest.raises(ValidationError, match="not a valid JSON schema at type"):
        ExpectedToolCall.model_validate(expect(fresh_schema(type=5)))
