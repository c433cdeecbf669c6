"""The body of every error response (RFC 9457 problem+json), as a schema: `app/errors.py`
renders errors with it and the OpenAPI documents describe every error response by it. Routes
name the error statuses their own logic returns with `errors(...)`; the statuses that follow
from a route's shape (401 for a credential, 403 for a role, 404 for an id in the path, 413 and
422 for input, 429 for a rate limit) are added by `app/openapi.py`."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, Field

PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    field: str = Field(
        description="Where: the field's dotted path from where the request sent it"
        " (`body.metric_ids.0`, `query.limit`, `header.Idempotency-Key`), or `line 3: input`"
        " for an imported file",
        examples=["body.name"],
    )
    message: str = Field(description="What is wrong with it", examples=["Field required"])
    type: str | None = Field(
        default=None,
        description="A stable code for the kind of error (`missing`, `string_too_long`, ...)",
        examples=["missing"],
    )
    line: int | None = Field(
        default=None,
        description="In an imported file or a template: the line (from 1) the error is on",
        examples=[3],
    )
    file: str | None = Field(
        default=None,
        description="In an import with attached files: the file the line is in, when not the"
        " main one",
    )
    item: int | None = Field(
        default=None, description="In an imported JSON document: which case (from 1)"
    )
    offset: int | None = Field(
        default=None,
        description="In an imported file that is not UTF-8 text: the offset (from 0) of the"
        " first byte that is not",
    )


class Problem(BaseModel):
    """An error: what happened (`title`, `detail`), where (`instance`, `request_id`) and, for
    invalid input, every field at fault with its reason (`errors`)."""

    type: str = Field(
        default="about:blank",
        description="`about:blank`: the status says what kind of error it is",
    )
    title: str = Field(description="The status's name", examples=["Unprocessable Entity"])
    status: int = Field(description="The HTTP status", examples=[422])
    detail: str | None = Field(
        default=None,
        description="What went wrong, for a person",
        examples=["Invalid request: body.name: Field required"],
    )
    instance: str = Field(description="The request's path", examples=["/api/v1/projects"])
    request_id: str | None = Field(
        default=None,
        description="The request's `X-Request-ID`: every log line of the request carries it",
    )
    errors: list[FieldError] | None = Field(
        default=None, description="For invalid input: each field at fault and why"
    )


ERROR_DESCRIPTIONS = {
    400: "The body is not valid JSON",
    401: "No credential, or one that is not valid (expired, revoked, forged)",
    403: "Your role does not allow this",
    404: "Not found, or not in your organization",
    409: "Conflicts with the current state (a duplicate name, a run that has not ended, ...)",
    413: "The body is larger than the limit",
    415: "The content type is not one this operation takes",
    422: "Invalid input: `errors` names every field at fault and why",
    429: "Too many attempts; `Retry-After` says when to try again",
    503: "The service is busy (no database connection, or no password check, came free in"
    " time); `Retry-After` says when to try again",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's own error responses (its `responses=`), each a Problem."""
    return {
        status: {"description": ERROR_DESCRIPTIONS.get(status, HTTPStatus(status).phrase)}
        for status in statuses
    }


def at_line(
    line: int, message: str, field: str | None = None, *, file: str | None = None, **where: int
) -> dict[str, Any]:
    """An error in an imported file, as a `FieldError`: `field` says where for a person
    (`line 3: input`, `line 3` when no one field is at fault, `more.yaml line 3: vars` in an
    attached file), `line` (with `file`, and `item` or `offset` where known) for a program."""
    place = f"{file} line {line}" if file else f"line {line}"
    error: dict[str, Any] = {"field": f"{place}: {field}" if field else place, "line": line}
    if file:
        error["file"] = file
    return {**error, **where, "message": message}


def placed(error: Mapping[str, Any]) -> dict[str, Any]:
    """An imported file's error (`line`, perhaps `file`, and a `field` that may be missing or
    null) in the form `at_line` gives; one in that form already is returned as it is."""
    found = dict(error)
    line = found.get("line")
    field = found.get("field")
    if not isinstance(line, int):
        if not isinstance(field, str) or not field:
            found["field"] = "file"  # the upload as a whole
        return found
    file = found.get("file")
    place = f"{file} line {line}" if file else f"line {line}"
    if not isinstance(field, str) or not field:
        found["field"] = place
    elif field != place and not field.startswith(place + ": "):
        found["field"] = f"{place}: {field}"
    return found
