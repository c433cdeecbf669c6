"""What an import reads of a file it refuses, and numbers it must refuse: a JSON file of more
cases than an import takes is refused once its max_cases + 1st case is decoded, the rest never
read, whatever its shape; a promptfoo upload's YAML is read up to MAX_YAML_TEXT characters, its
files together; an assertion's threshold beyond a double's range is a 422 naming it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from database.test_sets import foreign_documents, import_bounds
from database.test_sets.foreign import parse_foreign
from database.test_sets.io import parse_cases
from tests.database.test_sets.placement import where
from tests.helpers import assert_problem, create_project, create_test_set, register
from utils.errors import InvalidInput

SETS = "/api/v1/test-sets"


class _CountingDecoder(json.JSONDecoder):
    """The import's decoder, counting the objects it decodes at the top of a call: the cases
    the item reader has read, one call each."""

    def __init__(self, decoder: json.JSONDecoder) -> None:
        super().__init__()
        self.decoder = decoder
        self.objects = 0

    def raw_decode(self, s: str, idx: int = 0) -> tuple[Any, int]:
        value, end = self.decoder.raw_decode(s, idx)
        self.objects += isinstance(value, dict)
        return value, end


def _many(case: dict[str, Any], wrapper: str | None = None) -> str:
    items = "[" + ",\n".join([json.dumps(case)] * 1000) + "]"
    return items if wrapper is None else f'{{"{wrapper}": {items}}}'


@pytest.mark.parametrize(
    ("fmt", "content"),
    [
        ("json", _many({"input": "q"})),
        ("json", _many({"input": "q"}, "tests")),
        ("promptfoo", _many({"vars": {"q": "a"}}, "tests")),
        ("langfuse", _many({"input": "q"})),
        ("langfuse", _many({"input": "q"}, "data")),
    ],
    ids=["json array", "json tests", "promptfoo json", "langfuse array", "langfuse page"],
)
def test_a_json_file_of_too_many_cases_is_read_only_to_one_past_the_bound(
    monkeypatch: pytest.MonkeyPatch, fmt: str, content: str
) -> None:
    decoder = _CountingDecoder(import_bounds.DECODER)
    monkeypatch.setattr(import_bounds, "DECODER", decoder)
    with pytest.raises(InvalidInput) as caught:
        if fmt == "json":
            parse_cases(content.encode(), "json", max_cases=3)
        else:
            parse_foreign(content.encode(), fmt, max_cases=3)  # type: ignore[arg-type]
    assert caught.value.detail == "Too many test cases: at most 3 per import"
    assert decoder.objects == 4


async def _import(
    client: Any, content: bytes, content_type: str, params: dict[str, str] | None = None
) -> Any:
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    return await client.post(
        f"{SETS}/{test_set['id']}/import",
        params=params,
        content=content,
        headers={**owner.headers, "Content-Type": content_type},
    )


async def test_the_text_past_the_case_one_too_many_is_never_read(client):
    """Its bad syntax goes unnoticed: the refusal is for the number of cases."""
    content = b"[" + b'{"input": "q"},\n' * 100_001 + b"not JSON"
    response = await _import(client, content, "application/json")
    body = assert_problem(response, 422)
    assert body["detail"] == "Too many test cases: at most 100000 per import"


@pytest.mark.parametrize("declared", ["text/csv; charset=latin-1", 'text/csv; charset="cp1252"'])
async def test_an_upload_declared_in_another_charset_is_a_415_saying_so(client, declared: str):
    """It was read as UTF-8 whatever it said, and refused as "not UTF-8" at its first accent
    (or taken wrongly, where its bytes happened to be UTF-8 too)."""
    content = "input\ncaf\u00e9\n".encode("latin-1")
    for named in (None, {"format": "csv"}):  # (the CLI names the format)
        body = assert_problem(await _import(client, content, declared, named), 415)
        assert "imports read UTF-8 text only" in body["detail"]
    assert (await _import(client, b"input\nq\n", "text/csv; charset=UTF-8")).status_code == 201
    # `binary`, which some tools attach to any file, claims no charset
    binary = "application/octet-stream; charset=binary"
    assert (await _import(client, b"input\nq\n", binary, {"format": "csv"})).status_code == 201


# --- YAML text ----------------------------------------------------------------------------------


async def test_a_promptfoo_yaml_longer_than_the_bound_is_a_422_before_it_is_scanned(client):
    """A comment is no value: only the length of the text bounds its scanning."""
    size = foreign_documents.MAX_YAML_TEXT
    config = b"# " + b"x" * size + b"\ntests:\n  - vars: {question: hi}\n"
    response = await _import(client, config, "application/yaml", {"format": "promptfoo"})
    body = assert_problem(response, 422)
    assert f"the YAML (its files together) is more than {size:,} characters" in body["detail"]
    assert [where(error) for error in body["errors"]] == [(1, None)]


def test_the_yaml_files_of_one_upload_share_the_bound_on_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(foreign_documents, "MAX_YAML_TEXT", 200)
    config = "tests: [file://a.yaml, file://b.yaml]\n"  # 39 characters
    tests = "- vars: {question: hi}\n" + "#" * 57 + "\n"  # 81 characters
    files = {"a.yaml": tests.encode(), "b.yaml": tests.encode()}
    assert len(parse_foreign(config.encode(), "promptfoo", files).cases) == 2  # 201 - 1
    files["b.yaml"] = tests.encode() + b"#"
    with pytest.raises(InvalidInput) as caught:
        parse_foreign(config.encode(), "promptfoo", files)
    assert caught.value.detail.startswith("b.yaml: the YAML (its files together) is more than 200")


# --- thresholds ---------------------------------------------------------------------------------

_HUGE = "1" * 400  # an integer Python reads, past a double's range


@pytest.mark.parametrize(
    ("content", "content_type", "attachment", "place"),
    [
        (
            f"tests:\n  - vars: {{question: hi}}\n    assert:\n"
            f"      - {{type: latency, threshold: {_HUGE}}}\n",
            "application/yaml",
            None,
            (4, "assert[0]"),
        ),
        (
            '{"tests": [{"vars": {"question": "hi"}, "assert": [{"type": "contains", '
            f'"value": "x", "threshold": {_HUGE}}}]}}]}}',
            "application/json",
            None,
            (1, "assert[0]"),
        ),
        (
            "tests: file://t.csv\n",
            None,
            f"question,__expected\nhi,latency({'9' * 400})\n",
            (2, "assert[0]"),
        ),
    ],
    ids=["yaml", "json", "csv"],
)
async def test_a_threshold_beyond_a_double_is_a_422_naming_it(
    client, content, content_type, attachment, place
):
    if attachment is None:
        response = await _import(client, content.encode(), content_type, {"format": "promptfoo"})
    else:
        owner = await register(client)
        project = await create_project(client, owner)
        test_set = await create_test_set(client, owner, project["id"])
        response = await client.post(
            f"{SETS}/{test_set['id']}/import",
            params={"format": "promptfoo"},
            files=[
                ("file", ("promptfooconfig.yaml", content.encode(), "application/yaml")),
                ("attachment", ("t.csv", attachment.encode(), "text/csv")),
            ],
            headers=owner.headers,
        )
    body = assert_problem(response, 422)
    assert [where(error) for error in body["errors"]] == [place]
    assert body["errors"][0]["message"] == "threshold must be a finite number"


async def test_a_promptfoo_json_config_with_cases_before_its_tests_imports_its_tests(client):
    """The places of a JSON config's tests are read from the first "tests" or "cases" array:
    a "cases" array first stood in for the tests, and its cases were imported instead."""
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    config = {"cases": [{"vars": {"q": "case x"}}], "tests": [{"vars": {"q": "test a"}}]}
    response = await client.post(
        f"{SETS}/{test_set['id']}/import",
        params={"format": "promptfoo"},
        content=json.dumps(config).encode(),
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    exported = await client.get(
        f"{SETS}/{test_set['id']}/export", params={"format": "json"}, headers=owner.headers
    )
    assert "test a" in exported.text and "case x" not in exported.text
