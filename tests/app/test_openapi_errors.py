"""The error responses the API documents: every one the Problem schema as problem+json, each
operation's statuses those it can return (the ones its shape implies and its own), and what is
sent what the document says."""

from __future__ import annotations

import pytest

from tests.app.contract import operations, schema_validator
from tests.helpers import register
from utils.problems import PROBLEM_JSON


def test_every_error_response_is_the_problem_schema_as_problem_json(document):
    documented = 0
    for path, method, operation in operations(document):
        errors = {code: r for code, r in operation["responses"].items() if code.startswith("4")}
        if path in ("/health", "/health/ready"):  # no input, no caller: only a 503
            assert "503" in operation["responses"]
            continue
        if path == "/health/live":  # answers while the process does: only a body past the limit
            assert set(operation["responses"]) == {"200", "413"}
            continue
        assert errors, f"{method.upper()} {path} documents no error response"
        documented += 1
        for code, response in errors.items():
            assert response["content"] == {
                PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
            }, f"{method.upper()} {path} {code}"
    assert documented == len(operations(document)) - 3  # the three health checks
    assert "HTTPValidationError" not in document["components"]["schemas"]


@pytest.mark.parametrize(
    ("operation_id", "statuses"),
    [
        # A form it cannot read (no multipart boundary, too many fields).
        ("auth_login", {"400", "401", "409", "413", "422", "429"}),
        # No id; an API key is no user; a query parameter it does not take; the body limit
        # stands before routing, for an operation that takes no body too.
        ("users_read_me", {"401", "403", "413", "422"}),
        ("tests_read", {"401", "404", "413", "422"}),
        ("runs_create", {"400", "401", "403", "409", "413", "422"}),
        # A multipart body it cannot read; a foreign file's metric that finds no free name.
        ("test_sets_import", {"400", "401", "403", "404", "409", "413", "415", "422"}),
        ("invitations_create", {"400", "401", "403", "404", "409", "413", "422", "429"}),
    ],
)
def test_an_operation_documents_the_statuses_it_can_return(document, operation_id, statuses):
    operation = next(o for _, _, o in operations(document) if o["operationId"] == operation_id)
    assert {code for code in operation["responses"] if code.startswith("4")} == statuses


def test_every_write_documents_409_and_every_database_read_503_with_retry_after(document):
    """A write may be undone by a concurrent change, or find what it names deleted meanwhile
    (409); any operation may find no pooled connection free in time (503): a generated client
    must parse both as a Problem."""
    for path, method, operation in operations(document):
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        if path.startswith("/health"):
            continue
        if method in ("post", "put", "patch", "delete"):
            assert responses["409"]["content"] == {
                PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
            }, where
        busy = responses["503"]
        assert busy["content"][PROBLEM_JSON]["schema"]["$ref"].endswith("/Problem"), where
        assert "Retry-After" in busy["headers"], where


async def test_errors_sent_are_what_the_document_says(client, document):
    problem = schema_validator(document, {"$ref": "#/components/schemas/Problem"})
    unauthenticated = await client.get("/api/v1/users/me")
    auth = (await register(client)).headers
    invalid = await client.post("/api/v1/projects", json={"name": 5}, headers=auth)
    missing = await client.get("/api/v1/tests/00000000-0000-4000-8000-000000000000", headers=auth)
    for response, status in ((unauthenticated, 401), (invalid, 422), (missing, 404)):
        assert response.status_code == status
        assert response.headers["content-type"] == PROBLEM_JSON
        body = response.json()
        assert not list(problem.iter_errors(body)), body
    assert invalid.json()["errors"][0]["field"] == "body.name"


async def test_a_body_past_the_limit_and_an_unreadable_form_are_documented_where_sent(
    client, document, settings
):
    """The body limit stands before routing, so an operation that takes no body answers 413
    to one too; a form with no multipart boundary is a 400 from the form's parser."""
    by_id = {o["operationId"]: o for _, _, o in operations(document)}
    auth = (await register(client)).headers
    oversized = await client.request(
        "GET", "/api/v1/users/me", content=b"x" * (settings.max_body_bytes + 1), headers=auth
    )
    no_boundary = await client.post(
        "/api/v1/auth/login", content=b"x", headers={"content-type": "multipart/form-data"}
    )
    for operation_id, response, status in (
        ("users_read_me", oversized, 413),
        ("auth_login", no_boundary, 400),
    ):
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == PROBLEM_JSON
        assert str(status) in by_id[operation_id]["responses"], operation_id
