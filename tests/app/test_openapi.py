"""The API's contract documents: both served and valid OpenAPI; every operation named, described
and documented with its error responses as the problem+json actually sent; every request body
with a valid example; metric parameters typed per metric type; the stream's events typed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from openapi_spec_validator import validate
from pydantic import TypeAdapter, ValidationError

from database.evaluations.catalogue import CATALOGUE, accepted_parameters
from database.results.event_payloads import STREAM_EVENTS
from tests.app.contract import operations, schema_validator

# Renaming one breaks every generated client: a change here must be deliberate.
OPERATION_IDS = (
    "api_keys_create",
    "api_keys_list",
    "api_keys_read",
    "api_keys_revoke",
    "audit_log_list",
    "auth_login",
    "auth_logout",
    "auth_refresh",
    "auth_register",
    "auth_switch_organization",
    "health",
    "health_live",
    "health_ready",
    "invitations_accept",
    "invitations_create",
    "invitations_list",
    "invitations_revoke",
    "members_list",
    "members_remove",
    "members_update",
    "metrics_create",
    "metrics_delete",
    "metrics_list",
    "metrics_read",
    "metrics_update",
    "models_create",
    "models_delete",
    "models_list",
    "models_read",
    "models_test_connection",
    "models_update",
    "organizations_create",
    "organizations_delete",
    "organizations_list",
    "organizations_read",
    "organizations_transfer_ownership",
    "organizations_update",
    "projects_create",
    "projects_delete",
    "projects_list",
    "projects_read",
    "projects_set_baseline",
    "projects_update",
    "prompts_create",
    "prompts_create_version",
    "prompts_delete",
    "prompts_delete_label",
    "prompts_list",
    "prompts_list_versions",
    "prompts_read",
    "prompts_read_version",
    "prompts_render",
    "prompts_set_label",
    "prompts_update",
    "results_list_evaluations",
    "results_read",
    "runs_cancel",
    "runs_compare",
    "runs_create",
    "runs_create_stream_token",
    "runs_export",
    "runs_list",
    "runs_list_cases",
    "runs_list_results",
    "runs_read",
    "runs_repeat",
    "runs_rerun",
    "runs_rescore",
    "runs_resume",
    "runs_summary",
    "test_sets_add_tests",
    "test_sets_create",
    "test_sets_delete",
    "test_sets_export",
    "test_sets_import",
    "test_sets_list",
    "test_sets_list_version_cases",
    "test_sets_list_versions",
    "test_sets_publish_version",
    "test_sets_read",
    "test_sets_read_metrics",
    "test_sets_read_version",
    "test_sets_remove_test",
    "test_sets_replace_tests",
    "test_sets_set_metrics",
    "test_sets_update",
    "tests_create",
    "tests_create_bulk",
    "tests_delete",
    "tests_list",
    "tests_read",
    "tests_update",
    "users_read_me",
    "users_update_me",
    "webhooks_create",
    "webhooks_delete",
    "webhooks_list",
    "webhooks_list_deliveries",
    "webhooks_read",
    "webhooks_redeliver",
    "webhooks_rotate_secret",
    "webhooks_test",
    "webhooks_update",
)


@pytest.mark.parametrize("path", ["/openapi.json", "/public/openapi.json"])
async def test_the_openapi_documents_are_served_and_valid(client, path):
    response = await client.get(path)
    assert response.status_code == 200, response.text
    served = response.json()
    validate(served)  # raises, naming the fault, when the document is not valid OpenAPI
    assert served["paths"]


def test_operation_ids_are_stable_method_names(document):
    ids = sorted(operation["operationId"] for _, _, operation in operations(document))
    assert ids == sorted(OPERATION_IDS)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", op_id) for op_id in ids)


def test_every_operation_has_a_summary_a_description_and_a_tag_described(document):
    described_tags = {tag["name"] for tag in document["tags"] if tag.get("description")}
    for path, method, operation in operations(document):
        where = f"{method.upper()} {path}"
        assert operation.get("summary"), where
        assert operation.get("description"), where
        assert set(operation["tags"]) <= described_tags, where


CREDENTIALS: list[dict[str, list[str]]] = [{"HTTPBearer": []}, {"APIKeyHeader": []}]
# The operations anyone may call: no credential is read.
OPEN_OPERATIONS = {
    "auth_login",
    "auth_refresh",
    "auth_register",
    "health",
    "health_live",
    "health_ready",
}


def test_operations_that_read_a_credential_declare_both_ways_to_send_one(app, document):
    """A generated client sends its credential where `security` says: an access token or an
    API key as the bearer, or an API key as X-API-Key; the open operations ask for none."""
    assert document["components"]["securitySchemes"] == {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An access token (JWT) or an API key",
        },
        "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    for _, _, operation in operations(document):
        if operation["operationId"] in OPEN_OPERATIONS:
            assert "security" not in operation, operation["operationId"]
        else:
            assert operation["security"] == CREDENTIALS, operation["operationId"]
    public = next(r for r in app.routes if getattr(r, "path", None) == "/public").app
    streams = [o for item in public.openapi()["paths"].values() for o in item.values()]
    assert streams
    assert all(o["security"] == CREDENTIALS for o in streams)


def test_every_request_body_has_an_example_valid_for_its_schema(app, document):
    bodies = 0
    for _, _, operation in operations(document):
        for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
            where = f"{operation['operationId']} {media_type}"
            assert "example" in media, where
            errors = list(schema_validator(document, media["schema"]).iter_errors(media["example"]))
            assert not errors, f"{where}: {errors[0].message}"
            bodies += 1
    assert bodies >= 40
    # The schema cannot say everything a model checks (password rules, dates in the future):
    # each JSON example also passes the body model itself.
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or route.body_field is None:
            continue
        (method,) = route.methods or {"?"}
        operation = document["paths"][route.path_format][method.lower()]
        media = operation["requestBody"]["content"].get("application/json")
        if media is None:
            continue
        try:
            TypeAdapter(route.body_field.field_info.annotation).validate_python(media["example"])
        except ValidationError as exc:
            raise AssertionError(f"{operation['operationId']}: {exc}") from None


# The keywords whose keys are names (of schemas, of properties), not keywords.
_NAMED = ("schemas", "properties", "patternProperties", "$defs", "dependentSchemas")


def _schema_examples(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """Every example a schema holds, at any depth (a model's, a property's, a parameter's),
    with the schema it is an example of: in OpenAPI 3.1 only a schema has a list of them."""
    if isinstance(node, dict):
        if isinstance(node.get("examples"), list):
            schema = {key: value for key, value in node.items() if key != "examples"}
            for index, example in enumerate(node["examples"]):
                yield f"{where} examples[{index}]", schema, example
        for key, value in node.items():
            if key in _NAMED and isinstance(value, dict):
                for name, named in value.items():
                    yield from _schema_examples(named, f"{where}/{key}/{name}")
            elif key != "examples":
                yield from _schema_examples(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _schema_examples(item, f"{where}[{index}]")


def _media_examples(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """The example of every body (request and response) and parameter, with its schema."""
    for _, _, operation in operations(document):
        name = operation["operationId"]
        places = [(parameter["name"], parameter) for parameter in operation.get("parameters", [])]
        places += [
            (f"request {media_type}", media)
            for media_type, media in operation.get("requestBody", {}).get("content", {}).items()
        ]
        places += [
            (f"{status} {media_type}", media)
            for status, response in operation["responses"].items()
            for media_type, media in response.get("content", {}).items()
        ]
        for place, holder in places:
            if "example" in holder:
                yield f"{name} {place}", holder["schema"], holder["example"]
            for key, example in holder.get("examples", {}).items():
                if "value" in example:
                    yield f"{name} {place} {key}", holder["schema"], example["value"]


@pytest.mark.parametrize("which", ["api", "public"])
def test_every_example_in_the_documents_is_valid_for_its_schema(app, which):
    """A model's example, as the document shows it, is a valid instance of the model's schema:
    nulls included (FastAPI leaves every null out of the document, and an example that loses a
    required nullable property fails its own schema)."""
    public = next(r for r in app.routes if getattr(r, "path", None) == "/public").app
    document = app.openapi() if which == "api" else public.openapi()
    examples = [*_schema_examples(document, "#"), *_media_examples(document)]
    for where, schema, example in examples:
        validator = schema_validator(document, schema)
        faults = [fault.message for fault in validator.iter_errors(example)]
        assert not faults, f"{where}: {faults[0]}"
    assert len(examples) >= (80 if which == "api" else 1)
    if which == "api":
        audit = document["components"]["schemas"]["AuditEntryRead"]["examples"][0]
        assert audit["actor_api_key_id"] is None  # as the model writes it


def test_a_response_model_is_documented_for_every_success_status(app, document):
    """A generated client reads a body only where its status documents a schema: an operation
    that answers its model with more than one status (publishing a version: 201 made, 200
    unchanged) documents it with each."""
    for route in iter_route_contexts(app.routes):
        original = route.original_route
        if not isinstance(original, APIRoute) or original.response_model is None:
            continue
        for method in route.methods or ():
            operation = document["paths"][route.path_format][method.lower()]
            for status, response in operation["responses"].items():
                if status.startswith("2") and status != "204":
                    schema = response.get("content", {}).get("application/json", {}).get("schema")
                    assert schema, f"{operation['operationId']} {status} documents no body"
    publish = next(
        o for _, _, o in operations(document) if o["operationId"] == "test_sets_publish_version"
    )
    for status in ("200", "201"):
        content = publish["responses"][status]["content"]["application/json"]
        assert content["schema"] == {"$ref": "#/components/schemas/VersionRead"}


def test_metric_parameters_are_typed_per_metric_type(document):
    schemas = document["components"]["schemas"]
    create = schemas["MetricCreate"]
    mapping = create["discriminator"]["mapping"]
    assert create["discriminator"]["propertyName"] == "type"
    assert set(mapping) == set(CATALOGUE)
    assert len(create["oneOf"]) == len(CATALOGUE)
    for name, ref in mapping.items():
        variant = schemas[ref.rsplit("/", 1)[-1]]
        assert variant["properties"]["type"]["const"] == name
        parameters = variant["properties"]["parameters"]
        expected = accepted_parameters(name)  # a check's parameters, with its scope
        own, per_test = (choice["$ref"] for choice in parameters["anyOf"])
        assert own.endswith("/" + expected.__name__), (name, parameters)
        assert per_test.endswith("/" + accepted_parameters(name, per_test=True).__name__)
        if CATALOGUE[name].kind == "check":
            scope = schemas[expected.__name__]["properties"]["scope"]
            assert scope["enum"] == ["last", "each", "all", "any"]
            assert scope["default"] == "last" and "each" in scope["description"]
    regex = schemas[mapping["regex"].rsplit("/", 1)[-1]]
    validator = schema_validator(document, {"$ref": "#/components/schemas/MetricCreate"})
    example = {"project_id": "3f1c2a9e-6b7d-4e58-9a01-2c3d4e5f6a7b", "name": "r", "type": "regex"}
    assert not validator.is_valid({**example, "parameters": {}})  # the pattern is required
    assert validator.is_valid({**example, "parameters": {"pattern": r"\p{L}+"}})
    assert validator.is_valid({**example, "parameters": {"from_test": "assert:regex"}})
    assert "parameters" in regex["required"]
    # A check's scope, beside its own parameters or each test's; no judge takes one.
    scoped = {"pattern": "a", "scope": "each"}
    assert validator.is_valid({**example, "parameters": scoped})
    assert validator.is_valid({**example, "parameters": {"from_test": "k", "scope": "all"}})
    assert not validator.is_valid({**example, "parameters": {"pattern": "a", "scope": "most"}})
    judged = {**example, "type": "turn-relevance"}
    assert validator.is_valid(judged)
    assert not validator.is_valid({**judged, "parameters": {"scope": "each"}})


def test_the_public_document_types_every_event_of_the_stream(app):
    public = next(r for r in app.routes if getattr(r, "path", None) == "/public").app
    document = public.openapi()
    stream = document["paths"]["/runs/{run_id}/events"]["get"]
    messages = stream["responses"]["200"]["content"]["text/event-stream"]["schema"]["oneOf"]
    assert {m["properties"]["event"]["const"] for m in messages} == set(STREAM_EVENTS)
    for message in messages:
        ref = message["properties"]["data"]["$ref"]
        assert ref.rsplit("/", 1)[-1] in document["components"]["schemas"]
    # 429 and 503: no room for another stream (the organization's share, the server's).
    assert {code for code in stream["responses"] if code[0] in "45"} == {
        "401",
        "404",
        "413",
        "422",
        "429",
        "503",
    }
