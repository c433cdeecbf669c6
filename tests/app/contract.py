"""The API document as a contract a response is held to: its schemas as JSON Schema validators,
and `as_documented`, which checks that a response is one its operation documents (the status,
the content type, a body valid for the schema a generated client would read it with)."""

from __future__ import annotations

import re
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012


def schema_validator(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of `schema`, its references resolved in `document`."""
    root = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:doc", root)
    return Draft202012Validator(_rebase(schema), registry=registry)


def _rebase(node: Any) -> Any:
    """References into the document, made absolute (`urn:doc#/components/...`)."""
    if isinstance(node, dict):
        return {
            key: ("urn:doc" + value if key == "$ref" and value.startswith("#/") else _rebase(value))
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rebase(item) for item in node]
    return node


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every operation of the document: its path, method and operation."""
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def operation_of(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    """The operation that serves `method` on `path` (a request's path, ids in it)."""
    for template, item in document["paths"].items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path) and method.lower() in item:
            return dict(item[method.lower()])
    raise AssertionError(f"no operation documents {method} {path}")


def as_documented(document: dict[str, Any], response: httpx.Response) -> Any:
    """The response's body, once the response is checked to be one its operation documents."""
    request = response.request
    operation = operation_of(document, request.method, request.url.path)
    name, responses = operation["operationId"], operation["responses"]
    status = str(response.status_code)
    assert status in responses, f"{name} answered {status}, documented: {sorted(responses)}"
    content = responses[status].get("content") or {}
    if not response.content:
        assert not content, f"{name} {status}: documented with a body, answered none"
        return None
    media = response.headers["content-type"].split(";")[0].strip()
    assert media in content, f"{name} {status}: {media} is not documented ({sorted(content)})"
    schema = content[media].get("schema")
    assert schema, f"{name} {status} {media}: no schema (a generated client reads no body)"
    body = response.json()
    faults = [fault.message for fault in schema_validator(document, schema).iter_errors(body)]
    assert not faults, f"{name} {status}: {faults[:3]} in {body}"
    return body
