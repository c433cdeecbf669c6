"""Text PostgreSQL cannot store (a lone surrogate such as "\\ud800", valid in JSON but not in
UTF-8; NUL) is a 422 naming the field wherever a JSON body carries it, never a 500: every
operation taking JSON is sent its documented example with each string, key and free-form
object in turn carrying a lone surrogate."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import register

SURROGATE = "\ud800"
# Values for path parameters that are not ids.
PATH_VALUES = {"ref": "latest", "label": "production", "number": "1"}


def _variants(value: Any) -> Iterator[tuple[str, Any]]:
    """(where, the value with a lone surrogate put there), for every string, key and object."""
    if isinstance(value, str):
        yield "", value + SURROGATE
    elif isinstance(value, dict):
        yield "{key}", {**value, "key" + SURROGATE: "x"}
        for key, item in value.items():
            for where, changed in _variants(item):
                yield f".{key}{where}", {**value, key: changed}
    elif isinstance(value, list):
        for index, item in enumerate(value):
            for where, changed in _variants(item):
                yield f"[{index}]{where}", [*value[:index], changed, *value[index + 1 :]]


def _path(template: str, organization_id: uuid.UUID) -> str:
    path = template.replace("{organization_id}", str(organization_id))
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + str(uuid.uuid4()) + path[end + 1 :]
    return path


def _json_operations(document: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [
        (method, path, operation["requestBody"]["content"]["application/json"]["example"])
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
        and not operation["operationId"].startswith("test_sets_import")
    ]


async def test_a_lone_surrogate_anywhere_in_a_json_body_is_a_422(app, client):
    account = await register(client)
    headers = {**account.headers, "content-type": "application/json"}
    sent = refused_as_text = 0
    for method, template, example in _json_operations(app.openapi()):
        path = _path(template, account.organization_id)
        for where, body in _variants(example):
            # json.dumps escapes the surrogate (\ud800): valid JSON, not UTF-8.
            response = await client.request(method, path, content=json.dumps(body), headers=headers)
            sent += 1
            assert response.status_code == 422, (method, path, where, response.text)
            problem = response.json()
            assert any(e["field"].startswith("body") for e in problem["errors"]), problem
            # Others are refused first for another reason: a malformed email, an unknown key.
            refused_as_text += _refused_as_text(response.json())
    assert sent > 100
    assert refused_as_text > 60, refused_as_text


def _refused_as_text(problem: dict[str, Any]) -> bool:
    """Refused for its text: by our check (free-form values), or by pydantic's (typed
    strings and keys)."""
    return any(
        "lone surrogate" in e["message"] or e.get("type") == "string_unicode"
        for e in problem["errors"]
    )


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tests", {"metadata": {"deep": [{"k": SURROGATE}]}}),
        ("/tests", {"variables": {SURROGATE: "key"}}),
        ("/tests/bulk", {"tests": [{"input": "a", "metadata": {"k": SURROGATE}}]}),
        (
            "/metrics",
            {"name": "j", "type": "json-schema", "parameters": {"schema": {SURROGATE: 1}}},
        ),
        (
            "/models",
            {
                "name": "h",
                "provider": "http",
                "http": {
                    "url": "https://e.com",
                    "response_path": "$.a",
                    "headers": {"X-A": SURROGATE},
                },
            },
        ),
    ],
)
async def test_a_lone_surrogate_in_free_form_json_is_a_422_naming_it(client, path, body):
    account = await register(client)
    project = await client.post(
        "/api/v1/projects", json={"name": "surrogates"}, headers=account.headers
    )
    body = {"project_id": project.json()["id"], **body}
    if path.endswith("bulk") or path == "/tests":
        body.setdefault("input", "a")
    response = await client.post(
        "/api/v1" + path,
        content=json.dumps(body),
        headers={**account.headers, "content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert _refused_as_text(response.json()), response.text


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("application/json", '[{"input": "a", "metadata": {"k": "\\ud800"}}]'),
        ("application/x-ndjson", '{"input": "\\ud800"}\n'),
        ("application/json", '[{"input": "a", "\\ud800": "extra column"}]'),
    ],
)
async def test_a_lone_surrogate_in_an_imported_file_is_reported_by_line(
    client, content_type, content
):
    account = await register(client)
    project = await client.post(
        "/api/v1/projects", json={"name": "surrogates"}, headers=account.headers
    )
    test_set = await client.post(
        "/api/v1/test-sets",
        json={"project_id": project.json()["id"], "name": "s"},
        headers=account.headers,
    )
    response = await client.post(
        f"/api/v1/test-sets/{test_set.json()['id']}/import",
        content=content.encode(),
        headers={**account.headers, "content-type": content_type},
    )
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["line"] == 1
    assert "lone surrogate" in error["message"] or "unicode" in error["message"], error


def _text_parameters(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(GET path template, name) of every query parameter whose value may be text."""
    found = []
    for template, item in document["paths"].items():
        for parameter in item.get("get", {}).get("parameters", []):
            schema = parameter.get("schema", {})
            kinds = [schema.get("type"), *(s.get("type") for s in schema.get("anyOf", []))]
            formats = [schema.get("format"), *(s.get("format") for s in schema.get("anyOf", []))]
            if parameter["in"] == "query" and "string" in kinds and not any(formats):
                found.append((template, parameter["name"]))
    return found


async def test_a_nul_in_any_query_or_path_value_is_a_422_naming_the_parameter(app, client):
    """The database refuses a NUL in text it stores or compares: a parameter carrying one is
    refused by name (it was a 422 naming nothing, from the database)."""
    account = await register(client)
    parameters = _text_parameters(app.openapi())
    assert len(parameters) >= 15
    for template, name in parameters:
        path = "/api/v1" + _path(template, account.organization_id).removeprefix("/api/v1")
        response = await client.get(path, params={name: "a\x00b"}, headers=account.headers)
        assert response.status_code == 422, (template, name, response.text)
        fields = [error["field"] for error in response.json().get("errors", [])]
        assert any(f == name or f.endswith(f".{name}") for f in fields), (template, fields)

    prompt = await client.get(
        f"/api/v1/prompts/{uuid.uuid4()}/versions/a%00b", headers=account.headers
    )
    assert prompt.status_code == 422, prompt.text
    assert [error["field"] for error in prompt.json()["errors"]] == ["path.ref"]
