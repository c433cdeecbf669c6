"""JSON bodies the framework parses are capped in size (parsing holds the interpreter lock for
the whole document) and parsed by orjson, keeping every value exactly as sent."""

from __future__ import annotations

import json

import pytest
from fastapi.routing import APIRoute

from database.routing import CappedJsonRoute
from tests.helpers import assert_problem, create_project, register


def _routes(router):
    """Every API route, through included routers and the mounted public app."""
    for route in router.routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from _routes(route.original_router)
        elif hasattr(getattr(route, "app", None), "routes"):
            yield from _routes(route.app)


def test_every_route_with_a_body_parses_it_through_the_cap(app):
    routes = [route for route in _routes(app) if route.body_field is not None]
    assert len(routes) > 30
    assert [r.path for r in routes if not isinstance(r, CappedJsonRoute)] == []


async def test_a_json_body_over_the_cap_is_413_before_it_is_parsed(client, settings, monkeypatch):
    owner = await register(client)
    project_id = (await create_project(client, owner))["id"]
    monkeypatch.setattr(settings, "max_json_bytes", 64 * 1024)
    body = {"project_id": project_id, "input": "x", "metadata": {"note": "y" * 70_000}}
    response = await client.post("/api/v1/tests", json=body, headers=owner.headers)
    problem = assert_problem(response, 413)
    assert "65536 bytes" in problem["detail"]
    body["metadata"]["note"] = "y" * 60_000
    created = await client.post("/api/v1/tests", json=body, headers=owner.headers)
    assert created.status_code == 201, created.text


async def test_values_orjson_cannot_hold_exactly_are_parsed_as_sent(client):
    owner = await register(client)
    project_id = (await create_project(client, owner))["id"]
    metadata = {"big": 2**70, "precise": 0.1, "neg": -(2**64), "text": "é\u2028"}
    raw = json.dumps({"project_id": project_id, "input": "x", "metadata": metadata})
    created = await client.post(
        "/api/v1/tests",
        content=raw,
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["metadata"] == metadata


async def test_malformed_json_is_still_refused_as_before(client):
    owner = await register(client)
    response = await client.post(
        "/api/v1/projects",
        content=b'{"name": "x",}',
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    detail = assert_problem(response, 400)["detail"]
    assert detail.startswith("The request body is not valid JSON: ")


DEEP = "[" * 990 + "]" * 990  # deeper than Python's recursion limit, within the parser's


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/tests", '{"project_id": "%s", "input": "x", "metadata": {"a": %s}}'),
        (
            "/api/v1/tests/bulk",
            '{"project_id": "%s", "tests": [{"input": "x", "metadata": {"a": %s}}]}',
        ),
        (
            "/api/v1/metrics",
            '{"project_id": "%s", "name": "m", "type": "contains", "parameters": {"value": %s}}',
        ),
    ],
)
async def test_a_body_nested_past_the_recursion_limit_is_refused_not_a_500(client, path, body):
    owner = await register(client)
    project_id = (await create_project(client, owner))["id"]
    response = await client.post(
        path,
        content=body % (project_id, DEEP),
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    listed = await client.get(
        "/api/v1/tests", params={"project_id": project_id}, headers=owner.headers
    )
    assert listed.json()["total"] == 0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("NaN", "NaN is not a JSON number"),
        ("-Infinity", "-Infinity is not a JSON number"),
        ("1e400", "1e400 is past the range of a number"),
        ("[1, 12345678901234567890, -1e999]", "-1e999 is past the range of a number"),
        ("9" * 5000, "an integer of 5000 digits is longer than can be read"),
        ("9" * 250 + "e99", "9" * 40 + " is past the range of a number"),
    ],
)
async def test_what_is_no_json_number_is_refused_not_stored_as_null(client, value, reason):
    owner = await register(client)
    project_id = (await create_project(client, owner))["id"]
    response = await client.post(
        "/api/v1/tests",
        content=f'{{"project_id": "{project_id}", "input": "x", "metadata": {{"a": {value}}}}}',
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert (
        assert_problem(response, 400)["detail"] == f"The request body is not valid JSON: {reason}"
    )
    listed = await client.get(
        "/api/v1/tests", params={"project_id": project_id}, headers=owner.headers
    )
    assert listed.json()["total"] == 0
