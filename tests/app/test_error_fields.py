"""A field at fault is named where the request sent it, whether request validation or the
service's own check refused it: a client maps `body.name` to its form's field either way."""

from __future__ import annotations

from tests.helpers import (
    PASSWORD,
    assert_problem,
    create_project,
    create_test,
    register,
    unique_email,
)


def _fields(body: dict) -> list[str]:
    return [error["field"] for error in body["errors"]]


async def test_a_services_check_and_validation_name_a_body_field_alike(client):
    owner = await register(client)
    project = await create_project(client, owner)
    test = await create_test(client, owner, project["id"])
    body = {"project_id": project["id"], "name": "set", "test_ids": [test["id"], test["id"]]}
    by_service = await client.post("/api/v1/test-sets", json=body, headers=owner.headers)
    assert _fields(assert_problem(by_service, 422)) == ["body.test_ids"]
    by_validation = await client.post(
        "/api/v1/test-sets", json={**body, "test_ids": "not a list"}, headers=owner.headers
    )
    assert _fields(assert_problem(by_validation, 422)) == ["body.test_ids"]


async def test_a_query_parameter_is_named_as_one(client):
    owner = await register(client)
    path = f"/api/v1/organizations/{owner.organization_id}/audit-log"
    moments = {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    by_service = await client.get(path, params=moments, headers=owner.headers)
    assert _fields(assert_problem(by_service, 422)) == ["query.until"]
    by_validation = await client.get(path, params={"until": "soon"}, headers=owner.headers)
    assert _fields(assert_problem(by_validation, 422)) == ["query.until"]


async def test_a_name_or_email_taken_names_its_field(client):
    owner = await register(client)
    project = await create_project(client, owner)
    again = await client.post(
        "/api/v1/projects", json={"name": project["name"]}, headers=owner.headers
    )
    assert _fields(assert_problem(again, 409)) == ["body.name"]
    email = unique_email()
    await register(client, email=email)
    taken = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "name": "Twin"}
    )
    assert _fields(assert_problem(taken, 409)) == ["body.email"]


async def test_a_wrong_current_password_names_it(client):
    owner = await register(client)
    response = await client.patch(
        "/api/v1/users/me",
        json={"password": "another-passphrase-2", "current_password": "not-the-password-1"},
        headers=owner.headers,
    )
    assert _fields(assert_problem(response, 403)) == ["body.current_password"]


async def test_the_union_member_pydantic_tried_is_no_part_of_the_path(client):
    owner = await register(client)
    response = await client.post(
        "/api/v1/runs", json={"prompt_version": [], "gate": {"fail_on": 5}}, headers=owner.headers
    )
    fields = _fields(assert_problem(response, 422))
    assert "body.prompt_version" in fields and "body.gate.fail_on" in fields, fields
    assert not [f for f in fields if "str" in f or "[" in f or f.endswith(".int")], fields


async def test_a_query_parameter_the_operation_does_not_take_is_named(client):
    """A misspelt filter is refused: ignored, it listed every run as if none were given."""
    owner = await register(client)
    response = await client.get("/api/v1/runs", params={"state": "failed"}, headers=owner.headers)
    problem = assert_problem(response, 422)
    assert _fields(problem) == ["query.state"]
    assert "status" in problem["errors"][0]["message"]
    spelt_right = await client.get(
        "/api/v1/runs", params={"status": "failed"}, headers=owner.headers
    )
    assert spelt_right.status_code == 200, spelt_right.text


async def test_every_documented_query_parameter_is_taken_and_no_other(app, client):
    owner = await register(client)
    document = app.openapi()
    checked = 0
    for template, item in document["paths"].items():
        operation = item.get("get")
        if operation is None or "{" in template or template.startswith("/health"):
            continue
        names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
        for name in [*names, "not_a_parameter"]:
            response = await client.get(template, params={name: "x"}, headers=owner.headers)
            fields = _fields(response.json()) if response.status_code == 422 else []
            unknown = f"query.{name}" in fields and "not a parameter" in response.text
            assert unknown == (name == "not_a_parameter"), (template, name, response.text)
            checked += 1
    assert checked >= 30


async def test_a_health_check_answers_whatever_query_a_probe_adds(client):
    for path in ("/health", "/health/live", "/health/ready"):
        response = await client.get(path, params={"cache_buster": "1"})
        assert response.status_code != 422, (path, response.text)
        assert response.json()["status"] in ("ok", "unavailable"), (path, response.text)
