"""An import's refusals name the place at fault: a metric name too long and the assertion past
the kinds a set may have, by the line that asks for it; two `file` parts, by the field."""

from __future__ import annotations

import httpx

from tests.helpers import Account, assert_problem, create_project, create_test_set, register

SETS = "/api/v1/test-sets"


async def _set(client: httpx.AsyncClient) -> tuple[Account, str]:
    account = await register(client)
    project = await create_project(client, account)
    test_set = await create_test_set(client, account, project["id"])
    return account, test_set["id"]


async def _import(client: httpx.AsyncClient, config: str) -> dict:
    account, test_set_id = await _set(client)
    response = await client.post(
        f"{SETS}/{test_set_id}/import",
        params={"format": "promptfoo"},
        files=[("file", ("promptfooconfig.yaml", config.encode()))],
        headers=account.headers,
    )
    return assert_problem(response, 422)


async def test_a_metric_name_too_long_is_refused_at_the_assertions_line(client):
    config = (
        "tests:\n  - vars: {q: a}\n    assert:\n      - {type: contains, value: x}\n"
        f"      - {{type: equals, value: y, metric: {'m' * 201}}}\n"
    )
    problem = await _import(client, config)
    [error] = problem["errors"]
    assert error["line"] == 5
    assert error["field"] == "line 5: metric"
    assert error["message"] == "over 200 characters"


async def test_an_assertion_past_the_kinds_a_set_may_have_names_its_line_and_field(client):
    asserts = "".join(f"      - {{type: contains, value: x, metric: m{n}}}\n" for n in range(51))
    problem = await _import(client, f"tests:\n  - vars: {{q: hi}}\n    assert:\n{asserts}")
    [error] = problem["errors"]
    assert error["line"] == 4 + 50
    assert error["field"] == "line 54: assert[50]"
    assert "more than 50 kinds of assertion" in error["message"]
    assert "'m50' is the first past them" in error["message"]


async def test_two_file_parts_are_a_422_naming_file(client):
    account, test_set_id = await _set(client)
    response = await client.post(
        f"{SETS}/{test_set_id}/import",
        files=[("file", ("a.csv", b"input\nfirst\n")), ("file", ("b.csv", b"input\nsecond\n"))],
        headers=account.headers,
    )
    problem = assert_problem(response, 422)
    [error] = problem["errors"]
    assert error["field"] == "file"
    assert "2 parts named `file`" in error["message"]
    count = await client.get(f"{SETS}/{test_set_id}", headers=account.headers)
    assert count.json()["test_count"] == 0
