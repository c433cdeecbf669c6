"""A test's tool JSON (expected arguments, mocked arguments and responses) nests at most
MAX_TOOL_JSON_DEPTH levels: deeper is a 422 naming the field, on create, bulk create and edit.
Validation took about 255 levels but pydantic serializes fewer: a deeper test was a 500 when
created, and one edited in made its set's published version unreadable for good."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from database.tests.agent_fields import MAX_TOOL_JSON_DEPTH
from tests.helpers import Account, assert_problem, create_project, create_test, register

TESTS = "/api/v1/tests"
SETS = "/api/v1/test-sets"
# Past pydantic's serializer, as the defect's reports had it.
UNSERIALIZABLE = 254


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _tool_fields(field: str, levels: int) -> tuple[dict[str, Any], str]:
    """The agent fields holding JSON `levels` deep at `field`, and where it is named."""
    if field == "expected_arguments":
        calls = [{"name": "lookup", "arguments": _nested(levels)}]
        return {"expected_tool_calls": calls}, "expected_tool_calls.0.arguments"
    if field == "mocked_arguments":
        mocked = [{"name": "lookup", "arguments": _nested(levels), "response": "ok"}]
        return {"tool_responses": mocked}, "tool_responses.0.arguments"
    return {"tool_responses": [{"response": _nested(levels)}]}, "tool_responses.0.response"


FIELDS = ["expected_arguments", "mocked_arguments", "response"]


async def _send(
    client: httpx.AsyncClient, account: Account, project_id: str, how: str, fields: dict
) -> httpx.Response:
    if how == "create":
        body = {"project_id": project_id, "input": "q", **fields}
        return await client.post(TESTS, json=body, headers=account.headers)
    if how == "bulk":
        body = {"project_id": project_id, "tests": [{"input": "q", **fields}]}
        return await client.post(f"{TESTS}/bulk", json=body, headers=account.headers)
    test = await create_test(client, account, project_id)
    return await client.patch(f"{TESTS}/{test['id']}", json=fields, headers=account.headers)


@pytest.mark.parametrize("how", ["create", "bulk", "patch"])
@pytest.mark.parametrize("field", FIELDS)
async def test_tool_json_deeper_than_the_limit_is_refused_naming_its_field(client, how, field):
    owner = await register(client)
    project = await create_project(client, owner)
    for levels in (MAX_TOOL_JSON_DEPTH + 1, UNSERIALIZABLE):
        fields, named = _tool_fields(field, levels)
        response = await _send(client, owner, project["id"], how, fields)
        body = assert_problem(response, 422, field=named)
        assert f"at most {MAX_TOOL_JSON_DEPTH} levels deep" in response.text, body

    fields, _ = _tool_fields(field, MAX_TOOL_JSON_DEPTH)
    accepted = await _send(client, owner, project["id"], how, fields)
    assert accepted.status_code in (200, 201), accepted.text


async def test_a_version_holding_tool_json_at_the_limit_reads_and_exports(client):
    owner = await register(client)
    project = await create_project(client, owner)
    test = await create_test(client, owner, project["id"])
    fields, _ = _tool_fields("response", MAX_TOOL_JSON_DEPTH)
    edited = await client.patch(f"{TESTS}/{test['id']}", json=fields, headers=owner.headers)
    assert edited.status_code == 200, edited.text
    created = await client.post(
        SETS,
        json={"project_id": project["id"], "name": "deep", "test_ids": [test["id"]]},
        headers=owner.headers,
    )
    set_id = created.json()["id"]
    published = await client.post(f"{SETS}/{set_id}/versions", headers=owner.headers)
    assert published.status_code == 201, published.text

    cases = await client.get(f"{SETS}/{set_id}/versions/1/cases", headers=owner.headers)
    assert cases.status_code == 200, cases.text
    exported = await client.get(
        f"{SETS}/{set_id}/export", params={"format": "json"}, headers=owner.headers
    )
    assert exported.status_code == 200, exported.text
