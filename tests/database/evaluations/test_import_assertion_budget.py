"""A promptfoo config's defaultTest assertions repeat in every test: how many a file may come
to, counted before they are rendered, and each distinct parameter value checked once."""

from __future__ import annotations

from typing import Any

from database.evaluations import imports
from database.test_sets import foreign_promptfoo
from tests.database.evaluations.test_imports import _import, _setup
from tests.helpers import assert_problem

SETS = "/api/v1/test-sets"


def _config(defaults: list[str]) -> bytes:
    asserts = "".join(f"    - {item}\n" for item in defaults)
    return f"defaultTest:\n  assert:\n{asserts}tests: file://t.csv\n".encode()


def _rows(count: int) -> bytes:
    return ("q\n" + "".join(f"q{i}\n" for i in range(count))).encode()


def _counted(monkeypatch, module: Any, name: str) -> list[None]:
    calls: list[None] = []
    real = getattr(module, name)

    def counting(*args: Any) -> Any:
        calls.append(None)
        return real(*args)

    monkeypatch.setattr(module, name, counting)
    return calls


async def test_tests_past_the_assertion_budget_are_refused_before_theirs_are_rendered(
    client, monkeypatch
):
    """Fifty defaultTest assertions over a 100 KB CSV were 2.5 million assertions to render
    and check, 25 s of the import threads every organization shares, for a 422 at the end."""
    monkeypatch.setattr(foreign_promptfoo, "MAX_ASSERTIONS", 1_000)
    rendered = _counted(monkeypatch, foreign_promptfoo, "parameters")
    account, _, test_set = await _setup(client)
    config = _config([f"{{type: contains, value: x, metric: a{i}}}" for i in range(50)])

    refused = await _import(
        client, account, test_set["id"], config, "promptfoo", attachments={"t.csv": _rows(100)}
    )
    problem = assert_problem(refused, 422, field="t.csv line 22: assert")
    assert "the tests come to more than 1,000 assertions" in problem["detail"]
    assert len(rendered) == 1_000  # twenty tests' fifty, none of the 21st's
    count = await client.get(f"{SETS}/{test_set['id']}", headers=account.headers)
    assert count.json()["test_count"] == 0

    at_the_limit = await _import(
        client, account, test_set["id"], config, "promptfoo", attachments={"t.csv": _rows(20)}
    )
    assert at_the_limit.status_code == 201, at_the_limit.text
    assert at_the_limit.json()["imported"] == 20


async def test_each_distinct_parameter_value_is_checked_once_and_each_bad_test_named(
    client, monkeypatch
):
    checked = _counted(monkeypatch, imports, "given_parameters")
    account, _, test_set = await _setup(client)
    config = _config(["{type: contains, value: x}", "{type: icontains, value: '{{q}}'}"])

    response = await _import(
        client, account, test_set["id"], config, "promptfoo", attachments={"t.csv": _rows(100)}
    )
    assert response.status_code == 201, response.text
    assert len(checked) == 1 + 100  # `x` once; each test's own `q`

    bad = _config(["{type: llm-rubric, value: ok, threshold: -5}"])
    refused = await _import(
        client, account, test_set["id"], bad, "promptfoo", attachments={"t.csv": _rows(3)}
    )
    problem = assert_problem(refused, 422)
    assert [error["line"] for error in problem["errors"]] == [2, 3, 4]
    assert all("threshold" in error["message"] for error in problem["errors"])
