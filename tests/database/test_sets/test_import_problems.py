"""An import answers as the API document says: a bad file is a 422 whose errors are each the
documented `FieldError` (a `field` naming the line, and the field on it when one is at fault,
with `line` apart), whichever parser found it; a multipart body that cannot be read is a
documented 400, and a foreign file's metric that finds no free name a documented 409."""

from __future__ import annotations

from typing import Any

import pytest

from tests.app.contract import as_documented
from tests.database.test_sets.placement import where
from tests.helpers import Account, create_project, create_test_set, register

SETS = "/api/v1/test-sets"


async def _set(client: Any) -> tuple[Account, dict[str, Any]]:
    account = await register(client)
    project = await create_project(client, account)
    return account, await create_test_set(client, account, project["id"])


@pytest.mark.parametrize(
    ("content", "content_type", "params", "expected"),
    [
        (b"input\n\xff\n", "text/csv", {}, [(2, None)]),  # not UTF-8 text
        (b"input,prompt\nx,y\n", "text/csv", {}, [(1, None)]),  # a header's two inputs
        (b"input\nok,stray\n", "text/csv", {}, [(2, "column 2")]),
        (b'{"input": "x"', "application/json", {}, [(1, None)]),  # bad JSON syntax
        (b"[" * 40 + b"]" * 40, "application/json", {}, [(1, None)]),  # nested too deep
        (
            b'[{"input": "a"},\n 5,\n {"input": 7}]',
            "application/json",
            {},
            [(2, None), (3, "input")],
        ),
        (b'{"input": "a"}\nnot json\n', "application/x-ndjson", {}, [(2, None)]),
        # Foreign parsers: a syntax error that stops the parse, and a bad row.
        (
            b"tests:\n  - vars: {q: 1}\n    assert: [\n",
            "application/yaml",
            {"format": "promptfoo"},
            [(4, None)],
        ),
        (b'{"input": "a"}\n[1]\n', "application/x-ndjson", {"format": "openai-evals"}, [(2, None)]),
    ],
    ids=["utf-8", "header", "stray", "syntax", "nesting", "json-rows", "jsonl", "yaml", "evals"],
)
async def test_every_bad_file_is_a_documented_problem_naming_each_line(
    app, client, content, content_type, params, expected
):
    account, test_set = await _set(client)
    response = await client.post(
        f"{SETS}/{test_set['id']}/import",
        content=content,
        params=params,
        headers={**account.headers, "Content-Type": content_type},
    )
    assert response.status_code == 422, response.text
    body = as_documented(app.openapi(), response)
    assert [where(error) for error in body["errors"]] == expected
    if content.startswith(b"input\n\xff"):
        assert body["errors"][0]["offset"] == 6  # the byte's place, as documented


@pytest.mark.parametrize(
    ("content_type", "parts"),
    [
        ("multipart/form-data", None),  # no boundary
        (
            None,
            [("file", ("a.yaml", b"tests: []\n"))]
            + [("attachment", (f"{n}.csv", b"q\n")) for n in range(21)],
        ),
    ],
    ids=["no-boundary", "too-many-files"],
)
async def test_a_multipart_body_that_cannot_be_read_is_a_documented_400(
    app, client, content_type, parts
):
    account, test_set = await _set(client)
    url = f"{SETS}/{test_set['id']}/import"
    if parts is None:
        headers = {**account.headers, "Content-Type": content_type}
        response = await client.post(url, content=b"input\nx\n", headers=headers)
    else:
        response = await client.post(
            url, files=parts, params={"format": "promptfoo"}, headers=account.headers
        )
    assert response.status_code == 400, response.text
    as_documented(app.openapi(), response)


async def test_a_metric_without_a_free_name_is_a_documented_409(app, client):
    account, test_set = await _set(client)
    for name in [
        "contains",
        "contains (imported)",
        *(f"contains (imported {n})" for n in range(2, 10)),
    ]:
        made = await client.post(
            "/api/v1/metrics",
            json={"project_id": test_set["project_id"], "name": name, "type": "equals"},
            headers=account.headers,
        )
        assert made.status_code == 201, made.text
    config = b"tests:\n  - vars: {q: hi}\n    assert:\n      - type: contains\n        value: hi\n"
    response = await client.post(
        f"{SETS}/{test_set['id']}/import",
        content=config,
        params={"format": "promptfoo"},
        headers={**account.headers, "Content-Type": "application/yaml"},
    )
    assert response.status_code == 409, response.text
    as_documented(app.openapi(), response)
