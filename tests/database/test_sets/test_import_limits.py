"""The bounds of one imported row (its size, its JSON nesting), and parsing off the event loop."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from database.test_sets import service
from database.test_sets.import_bounds import MAX_NESTING, MAX_ROW_BYTES, too_deep, too_wide
from database.test_sets.io import Format, parse_case_documents, parse_cases
from tests.database.test_sets.placement import where
from tests.helpers import assert_problem, create_project, create_test_set, register
from utils.errors import InvalidInput

NESTED = f"nested more than {MAX_NESTING} levels deep"


def _nested(levels: int) -> str:
    """A JSON value of `levels` arrays, one within the other."""
    return "[" * levels + "]" * levels


def _errors(content: str, fmt: str) -> list[tuple[int, str | None, str]]:
    with pytest.raises(InvalidInput) as caught:
        parse_cases(content.encode(), fmt)  # type: ignore[arg-type]
    assert caught.value.status == 422
    return [(*where(e), e["message"]) for e in caught.value.errors or []]


# --- measuring ----------------------------------------------------------------------------------


def test_too_deep_counts_levels_outside_strings_and_names_the_line():
    assert too_deep(_nested(MAX_NESTING), MAX_NESTING) is None
    assert too_deep(_nested(MAX_NESTING + 1), MAX_NESTING) == 1
    text = '{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "b": "\\"[[[[[[[["}'
    assert too_deep(text, 2) is None
    assert too_deep('[\n[\n{"k":\n[1]}]]', 3) == 4
    assert too_deep('["\\\\", [[[]]]]', 3) == 1 and too_deep('["\\\\", [[[]]]]', 4) is None


def test_too_deep_reads_hostile_text_in_linear_time():
    started = time.perf_counter()
    for text in ('"' + '\\"' * 500_000 + "\\", '"[' * 500_000, _nested(500_000)):
        too_deep(text, MAX_NESTING)
    assert time.perf_counter() - started < 3  # each scans its megabyte once, in C


def test_too_wide_measures_utf8_bytes():
    assert too_wide("a" * MAX_ROW_BYTES) is None
    assert too_wide("a" * (MAX_ROW_BYTES + 1)) == (
        f"the row is {MAX_ROW_BYTES + 1:,} bytes; at most {MAX_ROW_BYTES:,}"
    )
    assert too_wide("é" * (MAX_ROW_BYTES // 2 + 1)) is not None  # fewer characters than bytes
    text = "x" * 10 + "é" * MAX_ROW_BYTES
    assert too_wide(text, 0, 10) is None and too_wide(text, 10) is not None


# --- nesting ------------------------------------------------------------------------------------


def test_jsonl_lines_nested_too_deep_are_listed_with_the_others():
    deep = json.dumps({"input": "x", "metadata": {"a": 1}}).replace("1", _nested(100_000))
    content = f'{{"input": "fine"}}\n{deep}\n{{"input": 5}}\n'
    errors = _errors(content, "jsonl")
    assert [line for line, _, _ in errors] == [2, 3]
    assert errors[0][2] == NESTED


def test_nesting_at_the_limit_passes_to_validation():
    metadata: object = 1
    for _ in range(MAX_NESTING - 2):  # the line's object and "metadata" are the other two
        metadata = {"a": metadata}
    errors = _errors(json.dumps({"input": "x", "metadata": metadata}) + "\n", "jsonl")
    assert errors[0][1] == "metadata" and NESTED not in errors[0][2]


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_json_document_nested_too_deep_is_refused_before_decoding(wrapped):
    case = f'{{"input": "deep", "metadata": {{"a": {_nested(200_000)}}}}}'
    cases = f'[\n  {{"input": "fine"}},\n  {case}\n]'
    document = f'{{"name": "x",\n "tests": {cases}}}' if wrapped else cases
    errors = _errors(document, "json")
    assert errors == [(4 if wrapped else 3, None, NESTED)]


def test_json_cases_may_nest_as_deep_as_jsonl_lines():
    metadata: object = 1
    for _ in range(MAX_NESTING - 2):
        metadata = {"a": metadata}
    case = {"input": "x", "metadata": metadata}
    for document in ([case], {"tests": [case]}):
        errors = _errors(json.dumps(document), "json")
        assert errors[0][1] == "metadata" and NESTED not in errors[0][2]


@pytest.mark.parametrize("column", ["metadata", "messages", "context", "tags"])
def test_csv_json_cells_nested_too_deep_are_row_errors(column):
    content = f"input,{column}\nfine,\ndeep,{_nested(50_000)}\n"
    assert _errors(content, "csv") == [(3, column, NESTED)]


# --- row size -----------------------------------------------------------------------------------


def test_rows_over_the_size_limit_are_listed_by_line():
    big = "x" * 120_000  # under the csv module's own limit on one cell
    wide = ",".join([big] * 9)
    content = "input," + ",".join(f"c{i}" for i in range(8)) + f"\nfine\n{wide}\n,oops\n"
    errors = _errors(content, "csv")
    assert [line for line, _, _ in errors] == [3, 4]
    assert errors[0][2] == f"the row is {len(wide) + 1:,} bytes; at most {MAX_ROW_BYTES:,}"

    line = json.dumps({"input": "é" * (MAX_ROW_BYTES // 2)}, ensure_ascii=False)
    assert _errors(f'{{"input": "fine"}}\n{line}\n', "jsonl")[0][:2] == (2, None)

    with pytest.raises(InvalidInput) as caught:
        parse_cases(f'[{{"input": "fine"}},\n {line}]'.encode(), "json")
    assert caught.value.errors is not None
    (error,) = caught.value.errors
    assert (error["line"], error["item"]) == (2, 2) and "bytes; at most" in error["message"]


# --- over HTTP ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type", "line"),
    [
        ('[{"input": "x", "metadata": {"a": ' + _nested(100_000) + "}}]", "application/json", 1),
        ('{"input": "x"}\n{"input": ' + _nested(100_000) + "}\n", "application/x-ndjson", 2),
        ("input,metadata\nx," + _nested(60_000) + "\n", "text/csv", 2),
    ],
)
async def test_deep_files_are_422_not_500_and_import_nothing(client, content, content_type, line):
    error = await _refused_import(client, content, content_type)
    assert error["line"] == line and NESTED in error["message"]


async def _refused_import(
    client: Any, content: str, content_type: str, params: dict[str, str] | None = None
) -> dict[str, Any]:
    """The first error of a refused import into a new set, which is left empty."""
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    response = await client.post(
        f"/api/v1/test-sets/{test_set['id']}/import",
        params=params,
        content=content.encode(),
        headers={**owner.headers, "Content-Type": content_type},
    )
    body = assert_problem(response, 422)
    read = await client.get(f"/api/v1/test-sets/{test_set['id']}", headers=owner.headers)
    assert read.json()["test_count"] == 0
    return body["errors"][0]


async def test_imports_parse_in_the_import_threads(client, monkeypatch):
    threads: list[str] = []

    def spy(content: bytes, fmt: Format, **options: Any) -> list[dict[str, Any]]:
        threads.append(threading.current_thread().name)
        return parse_case_documents(content, fmt, **options)

    monkeypatch.setattr(service, "parse_case_documents", spy)
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    response = await client.post(
        f"/api/v1/test-sets/{test_set['id']}/import",
        content=b"input\nfirst\nsecond\n",
        headers={**owner.headers, "Content-Type": "text/csv"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["imported"] == 2
    assert len(threads) == 1 and threads[0].startswith("import")
    assert threads[0] != threading.current_thread().name


_LONG = "1" * 5000  # more digits than Python converts to an integer


@pytest.mark.parametrize(
    ("fmt", "content", "line"),
    [
        ("json", f'[{{"input": "a"}},\n {{"input": "b", "metadata": {{"n": {_LONG}}}}}]', 2),
        ("jsonl", f'{{"input": "a"}}\n{{"input": "b", "metadata": {{"n": {_LONG}}}}}\n', 2),
        ("langfuse", f'[{{"input": "a"}},\n {{"input": "b", "metadata": {{"n": {_LONG}}}}}]', 2),
        ("promptfoo", f'{{"tests": [\n{{"vars": {{"input": "a", "n": {_LONG}}}}}]}}', 2),
        ("promptfoo", f"tests:\n  - vars: {{input: a}}\n  - vars: {{input: b, n: {_LONG}}}\n", 3),
        ("promptfoo", f"tests:\n  - vars: {{input: a}}\n  - vars: {{n: 0x{'f' * 4000}}}\n", 3),
    ],
    ids=[
        "json",
        "jsonl",
        "langfuse",
        "promptfoo json",
        "promptfoo yaml",
        "yaml hexadecimal",
    ],
)
async def test_an_integer_too_long_to_read_is_a_422_naming_its_line(client, fmt, content, line):
    error = await _refused_import(client, content, "application/octet-stream", {"format": fmt})
    assert error["line"] == line
    assert "an integer of more than 4,300 digits" in error["message"]
