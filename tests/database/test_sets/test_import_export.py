from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx
import pytest

from tests.database.test_sets.placement import where
from tests.helpers import (
    Account,
    add_member,
    assert_problem,
    create_project,
    create_test,
    create_test_set,
    register,
)

SETS = "/api/v1/test-sets"
MEDIA = {"csv": "text/csv", "json": "application/json", "jsonl": "application/x-ndjson"}

# Cases that stress every format: separators, quotes, newlines, unicode, formula triggers,
# values that look like lists or JSON, chats, and every optional field.
TRICKY_CASES: list[dict] = [
    {
        "input": 'Say "hi", then\nsay bye; 100% sure? | not a list',
        "expected_output": "hi, bye",
        "context": ["First passage, with a comma", "Second | with a pipe", "[1] a citation"],
        "behavior": "accuracy",
        "category": "greetings",
        "topic": "smalltalk",
        "tags": ["smoke", "multi word"],
        "variables": {"name": "Zoë", "n": 3},
        "metadata": {"source": "hand-written", "nested": {"ok": True}},
    },
    {"input": '=HYPERLINK("http://evil.example", "click")', "expected_output": "+1"},
    {"input": "-2 degrees", "expected_output": "@SUM(A1:A2)", "tags": ["=tag"]},
    {"input": "'=already quoted", "topic": "-topic"},
    {"input": "[not json", "context": ['{"looks": "like json"}']},
    {
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "2+2?"},
        ],
        "expected_output": "4",
    },
    {"input": "日本語のテスト 🚀", "metadata": {"x": [1, 2, "three"]}},
    {"input": "blank expectation", "expected_output": "   "},  # stored as null
]


async def _bulk(
    client: httpx.AsyncClient, account: Account, project_id: str, test_set_id: str, cases: list
) -> None:
    response = await client.post(
        "/api/v1/tests/bulk",
        json={"project_id": project_id, "test_set_id": test_set_id, "tests": cases},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text


async def _setup(client: httpx.AsyncClient, existing: int = 0) -> tuple[Account, dict, dict]:
    owner = await register(client)
    project = await create_project(client, owner)
    ids = [(await create_test(client, owner, project["id"]))["id"] for _ in range(existing)]
    test_set = await create_test_set(client, owner, project["id"], ids)
    return owner, project, test_set


async def _import_raw(
    client: httpx.AsyncClient,
    account: Account,
    test_set_id: str,
    content: bytes | str,
    content_type: str,
    **params: str,
) -> httpx.Response:
    return await client.post(
        f"{SETS}/{test_set_id}/import",
        content=content.encode() if isinstance(content, str) else content,
        params=params,
        headers={**account.headers, "Content-Type": content_type},
    )


async def _import_file(
    client: httpx.AsyncClient,
    account: Account,
    test_set_id: str,
    content: bytes | str,
    filename: str,
    content_type: str = "application/octet-stream",
    **params: str,
) -> httpx.Response:
    data = content.encode() if isinstance(content, str) else content
    return await client.post(
        f"{SETS}/{test_set_id}/import",
        files={"file": (filename, data, content_type)},
        params=params,
        headers=account.headers,
    )


async def _export(
    client: httpx.AsyncClient, account: Account, test_set_id: str, fmt: str, **params: Any
) -> httpx.Response:
    response = await client.get(
        f"{SETS}/{test_set_id}/export", params={"format": fmt, **params}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    return response


async def _cases(client: httpx.AsyncClient, account: Account, test_set_id: str) -> list[dict]:
    """The set's cases, in order, as the JSON export gives them."""
    return json.loads((await _export(client, account, test_set_id, "json")).content)


async def _counts(client: httpx.AsyncClient, account: Account, test_set: dict) -> tuple[int, int]:
    """(tests in the set, tests in its project)."""
    read = await client.get(f"{SETS}/{test_set['id']}", headers=account.headers)
    listed = await client.get(
        "/api/v1/tests",
        params={"project_id": test_set["project_id"], "limit": 1},
        headers=account.headers,
    )
    return read.json()["test_count"], listed.json()["total"]


# --- import ---------------------------------------------------------------------------------

CSV_FILE = (
    "question,answer,tags,Source\nWhat is 2+2?,4,math|easy,quiz\nCapital of France?,Paris,,\n"
)
JSON_FILE = json.dumps(
    {
        "name": "ignored",
        "tests": [
            {"prompt": "What is 2+2?", "expected": "4", "tags": "math,easy", "Source": "quiz"},
            {"input": "Capital of France?", "answer": "Paris"},
        ],
    }
)
JSONL_FILE = (
    '{"question": "What is 2+2?", "expected_output": "4", "tags": ["math", "easy"],'
    ' "Source": "quiz"}\n\n{"input": "Capital of France?", "reference": "Paris"}\n'
)
FILES = {"csv": CSV_FILE, "json": JSON_FILE, "jsonl": JSONL_FILE}
EXPECTED = [
    ("What is 2+2?", "4", ["math", "easy"], {"Source": "quiz"}),
    ("Capital of France?", "Paris", [], {}),
]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
@pytest.mark.parametrize("how", ["multipart", "raw"])
async def test_import_each_format_maps_aliases_and_appends(client, fmt, how):
    owner, _, test_set = await _setup(client, existing=1)
    if how == "multipart":
        response = await _import_file(client, owner, test_set["id"], FILES[fmt], f"cases.{fmt}")
    else:
        response = await _import_raw(client, owner, test_set["id"], FILES[fmt], MEDIA[fmt])
    assert response.status_code == 201, response.text
    assert response.json() == {
        "imported": 2,
        "test_count": 3,
        "changed": True,
        "metrics": [],
        "unmapped": [],
        "notes": [],
    }
    cases = (await _cases(client, owner, test_set["id"]))[1:]
    assert [(c["input"], c["expected_output"], c["tags"], c["metadata"]) for c in cases] == EXPECTED


@pytest.mark.parametrize(
    ("params", "filename", "content_type", "content"),
    [
        ({"format": "csv"}, "cases.txt", "text/plain", CSV_FILE),  # ?format= wins
        ({"format": "jsonl"}, "cases.json", "application/json", JSONL_FILE),
        ({}, "cases.jsonl", "application/octet-stream", JSONL_FILE),  # by extension
        ({}, "export.csv", "application/vnd.ms-excel", CSV_FILE),
    ],
)
async def test_import_format_from_parameter_or_extension(
    client, params, filename, content_type, content
):
    owner, _, test_set = await _setup(client)
    response = await _import_file(
        client, owner, test_set["id"], content, filename, content_type, **params
    )
    assert response.status_code == 201, response.text
    assert response.json()["imported"] == 2


async def test_raw_body_with_format_parameter(client):
    owner, _, test_set = await _setup(client)
    response = await _import_raw(
        client, owner, test_set["id"], CSV_FILE, "text/plain", format="csv"
    )
    assert response.status_code == 201, response.text


async def test_csv_with_bom_crlf_and_messages_column(client):
    owner, _, test_set = await _setup(client)
    chat = json.dumps([{"role": "user", "content": "Hi"}]).replace('"', '""')
    content = f'\ufeffmessages,expected_output\r\n"{chat}",Hello\r\n'.encode()
    response = await _import_raw(client, owner, test_set["id"], content, "text/csv")
    assert response.status_code == 201, response.text
    (case,) = await _cases(client, owner, test_set["id"])
    assert case["messages"] == [{"role": "user", "content": "Hi"}]
    assert case["expected_output"] == "Hello"


# --- import: refused files ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content", "expected"),
    [
        (
            "csv",
            "input,expected_output,metadata,topic\n"
            "fine,ok,,\n"
            ",no input here,,\n"
            'also fine,,"{""a"": 1}",\n'
            "bad metadata,,{not json,\n"
            f"long topic,,,{'t' * 201}\n",
            [(3, "input"), (5, "metadata"), (6, "topic")],
        ),
        (
            "json",
            '[\n  {"input": "fine"},\n  {"input": 5},\n  "just text",\n'
            '  {"expected": "no input"},\n  {"input": "ok", "tags": [""]}\n]',
            [(3, "input"), (4, None), (5, "input"), (6, "tags.0")],
        ),
        (
            "jsonl",
            '{"input": "fine"}\n{"input": "broken"\n\n{"messages": [{"role": "x",'
            ' "content": "y"}]}\n["a list"]\n',
            [(2, None), (4, "messages.0.role"), (5, None)],
        ),
    ],
)
async def test_a_file_with_bad_rows_imports_nothing_and_lists_every_bad_row(
    client, fmt, content, expected
):
    owner, _, test_set = await _setup(client, existing=2)
    response = await _import_raw(client, owner, test_set["id"], content, MEDIA[fmt])
    body = assert_problem(response, 422)
    assert [where(error) for error in body["errors"]] == expected
    assert all(error["message"] for error in body["errors"])
    assert f"{len(expected)} invalid value(s)" in body["detail"]
    assert await _counts(client, owner, test_set) == (2, 2)


@pytest.mark.parametrize(
    ("content", "content_type", "status", "phrase"),
    [
        (b"input\n\xff\xfe broken\n", "text/csv", 422, "not UTF-8"),
        (b"", "text/csv", 422, "no test cases"),
        (b"input,expected\n", "text/csv", 422, "no test cases"),
        (b"expected,topic\nx,y\n", "text/csv", 422, "no input"),
        (b'{"input": "x"', "application/json", 422, "Invalid JSON"),
        (b'{"other": []}', "application/json", 422, "'tests' array"),
        (b"input\nx\n", "text/plain", 415, "Unsupported"),
        (b"input\nx\n", "application/xml", 415, "Unsupported"),
    ],
)
async def test_undecodable_empty_or_unsupported_files(
    client, content, content_type, status, phrase
):
    owner, _, test_set = await _setup(client, existing=1)
    response = await _import_raw(client, owner, test_set["id"], content, content_type)
    assert phrase in assert_problem(response, status)["detail"]
    assert await _counts(client, owner, test_set) == (1, 1)


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"input\nfine\nbad\x00row\n", "text/csv"),
        (b'{"input": "fine"}\n{"input": "bad", "note": "\\u0000"}\n', "application/x-ndjson"),
    ],
)
async def test_nul_characters_make_a_listed_bad_row(client, content, content_type):
    owner, _, test_set = await _setup(client)
    response = await _import_raw(client, owner, test_set["id"], content, content_type)
    body = assert_problem(response, 422)
    assert [error["line"] for error in body["errors"]] == [3 if content_type == "text/csv" else 2]


async def test_unsupported_upload_and_missing_file_field(client):
    owner, _, test_set = await _setup(client)
    xlsx = await _import_file(
        client, owner, test_set["id"], b"PK\x03\x04", "cases.xlsx", "application/vnd.ms-excel"
    )
    assert_problem(xlsx, 415)
    no_file = await client.post(
        f"{SETS}/{test_set['id']}/import",
        files={"upload": ("cases.csv", b"input\nx\n", "text/csv")},
        headers=owner.headers,
    )
    assert_problem(no_file, 422, field="file")
    bad_format = await _import_raw(
        client, owner, test_set["id"], CSV_FILE, "text/csv", format="xls"
    )
    assert_problem(bad_format, 422, field="format")
    assert await _counts(client, owner, test_set) == (0, 0)


@pytest.mark.parametrize("how", ["multipart", "raw"])
async def test_files_above_the_limit_get_413(client, runtime, monkeypatch, how):
    monkeypatch.setattr(runtime.settings, "import_max_bytes", 1024)
    owner, _, test_set = await _setup(client)
    small = "input\n" + "short case\n" * 50  # about 560 bytes
    large = "input\n" + "a somewhat longer case\n" * 50  # about 1,160 bytes
    for content, status in ((large, 413), (small, 201)):
        if how == "multipart":
            response = await _import_file(client, owner, test_set["id"], content, "cases.csv")
        else:
            response = await _import_raw(client, owner, test_set["id"], content, "text/csv")
        assert response.status_code == status, response.text
        if status == 413:
            assert "1024 bytes" in assert_problem(response, 413)["detail"]
            assert await _counts(client, owner, test_set) == (0, 0)
    assert await _counts(client, owner, test_set) == (50, 50)


# --- export ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
async def test_export_then_import_round_trips_the_same_cases(client, fmt):
    owner, project, source = await _setup(client)
    await _bulk(client, owner, project["id"], source["id"], TRICKY_CASES)
    exported = await _export(client, owner, source["id"], fmt)
    assert exported.headers["content-type"].startswith(MEDIA[fmt])

    target = await create_test_set(client, owner, project["id"])
    response = await _import_raw(client, owner, target["id"], exported.content, MEDIA[fmt])
    assert response.status_code == 201, response.text
    assert response.json()["imported"] == len(TRICKY_CASES)

    original = await _cases(client, owner, source["id"])
    assert await _cases(client, owner, target["id"]) == original
    assert [case["input"] for case in original] == [case.get("input") for case in TRICKY_CASES]
    # and the target's export is byte for byte the source's
    assert (await _export(client, owner, target["id"], fmt)).content == exported.content


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
async def test_a_case_of_quotes_within_the_row_limit_round_trips(client, fmt):
    """880 KB as JSON, but each quote is three bytes in CSV (doubled inside a quoted cell,
    after JSON's backslash): the CSV record was 1.1 MB and its import refused it."""
    owner, project, source = await _setup(client)
    quotes = {f"k{i}": '"' * 60_000 for i in range(2)}
    case = {"input": '"' * 100_000, "expected_output": '"' * 100_000, "metadata": quotes}
    await _bulk(client, owner, project["id"], source["id"], [{**case, "variables": quotes}])
    exported = await _export(client, owner, source["id"], fmt)
    target = await create_test_set(client, owner, project["id"])
    response = await _import_raw(client, owner, target["id"], exported.content, MEDIA[fmt])
    assert response.status_code == 201, response.text[:300]
    assert await _cases(client, owner, target["id"]) == await _cases(client, owner, source["id"])


async def test_csv_export_neutralises_formula_cells(client):
    owner, project, test_set = await _setup(client)
    await _bulk(client, owner, project["id"], test_set["id"], TRICKY_CASES[1:4])
    exported = await _export(client, owner, test_set["id"], "csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(row["input"], row["expected_output"]) for row in rows] == [
        ('\'=HYPERLINK("http://evil.example", "click")', "'+1"),
        ("'-2 degrees", "'@SUM(A1:A2)"),
        ("''=already quoted", ""),
    ]
    assert rows[1]["tags"] == '["=tag"]'  # a JSON list, so no cell starts with a trigger
    assert rows[2]["topic"] == "'-topic"
    for row in rows:
        assert not any(cell[:1] in "=+-@" for cell in row.values() if cell)
    # JSON is not a spreadsheet format: its values are exact
    cases = await _cases(client, owner, test_set["id"])
    assert cases[0]["input"].startswith("=HYPERLINK")


async def test_export_of_a_version_keeps_the_old_text(client):
    owner, project, test_set = await _setup(client)
    test = await create_test(client, owner, project["id"], input="old wording", tags=["v1"])
    await client.post(
        f"{SETS}/{test_set['id']}/tests", json={"test_ids": [test["id"]]}, headers=owner.headers
    )
    published = await client.post(f"{SETS}/{test_set['id']}/versions", headers=owner.headers)
    assert published.status_code == 201
    edited = await client.patch(
        f"/api/v1/tests/{test['id']}", json={"input": "new wording"}, headers=owner.headers
    )
    assert edited.status_code == 200

    for fmt in ("csv", "json", "jsonl"):
        old = await _export(client, owner, test_set["id"], fmt, version=1)
        current = await _export(client, owner, test_set["id"], fmt)
        assert "old wording" in old.text and "new wording" not in old.text
        assert "new wording" in current.text and "old wording" not in current.text
    versioned = await _export(client, owner, test_set["id"], "jsonl", version=1)
    disposition = versioned.headers["content-disposition"]
    assert disposition.startswith("attachment;") and disposition.endswith('-v1.jsonl"')


async def test_export_refuses_unknown_format_and_version(client):
    owner, _, test_set = await _setup(client, existing=1)
    url = f"{SETS}/{test_set['id']}/export"
    assert_problem(
        await client.get(url, params={"format": "xlsx"}, headers=owner.headers), 422, field="format"
    )
    for version in (0, 2**31):
        assert_problem(
            await client.get(url, params={"version": version}, headers=owner.headers),
            422,
            field="version",
        )
    assert_problem(await client.get(url, params={"version": 1}, headers=owner.headers), 404)


async def test_export_of_an_empty_set(client):
    owner, _, test_set = await _setup(client)
    assert (await _export(client, owner, test_set["id"], "json")).json() == []
    assert (await _export(client, owner, test_set["id"], "jsonl")).content == b""
    header = (await _export(client, owner, test_set["id"], "csv")).text.strip()
    assert header.split(",")[:2] == ["input", "expected_output"]


# --- authorization --------------------------------------------------------------------------


async def test_viewer_exports_but_cannot_import(client):
    owner, _, test_set = await _setup(client, existing=1)
    viewer = await add_member(client, owner, "viewer")
    assert (await _export(client, viewer, test_set["id"], "csv")).text.startswith("input,")
    response = await _import_raw(client, viewer, test_set["id"], CSV_FILE, "text/csv")
    assert_problem(response, 403)
    assert await _counts(client, owner, test_set) == (1, 1)


async def test_another_organizations_set_cannot_be_imported_into_or_exported(client):
    owner, _, test_set = await _setup(client, existing=1)
    stranger = await register(client)
    imported = await _import_raw(client, stranger, test_set["id"], CSV_FILE, "text/csv")
    assert_problem(imported, 404)
    exported = await client.get(
        f"{SETS}/{test_set['id']}/export", params={"format": "json"}, headers=stranger.headers
    )
    assert_problem(exported, 404)
    assert await _counts(client, owner, test_set) == (1, 1)
