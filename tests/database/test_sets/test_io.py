from __future__ import annotations

import csv
import io
import json

import pytest

from database.test_sets.exports import export_cases
from database.test_sets.io import CSV_COLUMNS, detect_format, parse_case_documents, parse_cases
from database.tests.schemas import TestCaseFields as Case
from tests.database.test_sets.placement import where
from utils.errors import InvalidInput, UnsupportedMediaType


def invalid(content: bytes | str, fmt: str, **kwargs: int) -> InvalidInput:
    data = content.encode() if isinstance(content, str) else content
    with pytest.raises(InvalidInput) as caught:
        parse_cases(data, fmt, **kwargs)  # type: ignore[arg-type]
    assert caught.value.status == 422
    return caught.value


def located(exc: InvalidInput) -> list[tuple[int, str | None]]:
    return [where(error) for error in exc.errors or []]


# --- detect_format ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "content_type", "explicit", "expected"),
    [
        ("cases.json", "text/csv", "JSONL", "jsonl"),  # explicit wins
        (None, None, "ndjson", "jsonl"),
        ("cases.txt", "text/csv; charset=utf-8", None, "csv"),
        ("cases.txt", "application/csv", None, "csv"),
        ("x", "application/json", None, "json"),
        ("x", "application/x-ndjson", None, "jsonl"),
        ("x", "application/jsonl", None, "jsonl"),
        ("x", "application/x-jsonlines", None, "jsonl"),
        ("Cases.CSV", "text/plain", None, "csv"),
        ("cases.jsonl", "application/octet-stream", None, "jsonl"),
        ("cases.ndjson", None, None, "jsonl"),
        ("cases.json", "", None, "json"),
        ("export.csv", "application/vnd.ms-excel", None, "csv"),  # what Windows sends
    ],
)
def test_detect_format(
    filename: str | None, content_type: str | None, explicit: str | None, expected: str
) -> None:
    assert detect_format(filename, content_type, explicit) == expected


@pytest.mark.parametrize(
    ("filename", "content_type", "explicit"),
    [
        ("cases.xlsx", "application/vnd.openxmlformats", None),
        ("cases", "text/plain", None),
        (None, None, None),
        ("cases.csv", "text/csv", "yaml"),
    ],
)
def test_detect_format_refuses_unknown(
    filename: str | None, content_type: str | None, explicit: str | None
) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        detect_format(filename, content_type, explicit)
    assert caught.value.status == 415
    assert "text/csv" in caught.value.detail and "application/x-ndjson" in caught.value.detail


# --- CSV import --------------------------------------------------------------------------------


def test_csv_aliases_lists_and_extra_columns() -> None:
    content = (
        " Prompt ,Answer,Passages,Behaviour,CATEGORY,topic,Tags,vars,metadata,Source\n"
        'What is 2+2?,4,a|b | c,math,arith,sums,"x, y|z","{""n"": 1}","{""k"": true}",wiki\n'
        'Hi,,"[""p|1"", ""p2""]",,,,"[""t1""]",,,\n'
    )
    first, second = parse_cases(content.encode(), "csv")
    assert first.input == "What is 2+2?"
    assert first.expected_output == "4"
    assert first.context == ["a", "b", "c"]
    assert first.behavior == "math"
    assert first.category == "arith"
    assert first.topic == "sums"
    assert first.tags == ["x", "y", "z"]
    assert first.variables == {"n": 1}
    assert first.metadata == {"k": True, "Source": "wiki"}
    # empty cells mean "not given"; JSON arrays keep pipes inside items
    assert second.input == "Hi"
    assert second.expected_output is None
    assert second.context == ["p|1", "p2"]
    assert second.tags == ["t1"]
    assert second.metadata == {}


@pytest.mark.parametrize("name", ["question", "query", "input"])
@pytest.mark.parametrize("expected", ["expected_output", "Expected Output", "ideal", "target"])
def test_csv_other_aliases(name: str, expected: str) -> None:
    [case] = parse_cases(f"{name},{expected},contexts\nq,a,ctx\n".encode(), "csv")
    assert (case.input, case.expected_output, case.context) == ("q", "a", ["ctx"])


def test_csv_messages_only_and_text_starting_with_bracket() -> None:
    messages = json.dumps([{"role": "user", "content": "hello"}])
    rows = [["messages", "context"], [messages, "[1] a citation"]]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    [case] = parse_cases(buffer.getvalue().encode(), "csv")
    assert case.input is None
    assert case.messages is not None and case.messages[0].content == "hello"
    assert case.context == ["[1] a citation"]


def test_csv_errors_list_every_bad_row_with_physical_lines() -> None:
    content = (
        "input,expected_output,behavior,messages\n"  # line 1
        'ok,"a quoted\nmulti-line\ncell",,\n'  # lines 2-4
        ",missing input,,\n"  # line 5
        "\n"  # line 6: blank, skipped
        "fine,,,\n"  # line 7
        f"too long behavior,,{'b' * 300},\n"  # line 8
        "bad json,,,{oops\n"  # line 9
        'bad message,,,"[{""role"": ""robot"", ""content"": ""x""}]"\n'  # line 10
    )
    exc = invalid(content, "csv")
    assert located(exc) == [
        (5, "input"),
        (8, "behavior"),
        (9, "messages"),
        (10, "messages.0.role"),
    ]
    assert all(error["message"] for error in exc.errors or [])
    assert "4 invalid" in exc.detail and "line 5" in exc.detail


def test_csv_crlf_line_numbers() -> None:
    content = 'input,behavior\r\n"two\r\nlines",x\r\nok,\r\n,y\r\n'
    assert located(invalid(content, "csv")) == [(5, "input")]


def test_csv_value_in_unnamed_column_and_unterminated_quote() -> None:
    assert located(invalid("input,\nok,\nok,stray\n", "csv")) == [(3, "column 2")]
    exc = invalid('input\nok\n"never closed\nmore\n', "csv")
    assert located(exc) == [(3, None)]
    assert "malformed CSV" in (exc.errors or [])[0]["message"]


def test_csv_values_in_many_unnamed_columns_are_one_error_a_row() -> None:
    """A megabyte of `x,` is half a million values without a header: each was an error of
    its own (140 MB held for one row, 7 s for ten megabytes), where one a row says it."""
    row = "ok" + ",x" * 200_000
    exc = invalid("input\n" + row + "\n" + row + "\nok,,x\n", "csv")
    assert located(exc) == [(2, "column 2"), (3, "column 2"), (4, "column 3")]
    messages = [error["message"] for error in exc.errors or []]
    assert messages[0] == "200000 values in columns without a header, the first here"
    assert messages[2] == "a value in a column without a header"
    assert exc.detail.startswith("3 invalid value(s) in the file")


def test_csv_header_problems() -> None:
    exc = invalid("prompt,question\na,b\n", "csv")
    assert located(exc) == [(1, None)]
    assert "both give 'input'" in exc.detail
    # a semicolon-separated file reads as one unknown column: say so once, not per row
    exc = invalid("input;expected_output\na;b\n", "csv")
    assert "no input" in exc.detail


def test_csv_max_cases() -> None:
    content = "input\n" + "q\n" * 6
    assert len(parse_cases(content.encode(), "csv", max_cases=6)) == 6
    assert "at most 5" in invalid(content, "csv", max_cases=5).detail


def test_csv_ten_thousand_rows() -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["question", "answer", "context", "tags", "source"])
    for n in range(10_000):
        writer.writerow([f"q{n}, with comma", f"a\n{n}", f"c{n}|d{n}", "t1,t2", f"s{n}"])
    cases = parse_cases(buffer.getvalue().encode(), "csv")
    assert len(cases) == 10_000
    assert cases[-1].expected_output == "a\n9999"
    assert cases[-1].metadata == {"source": "s9999"}


# --- JSON and JSONL import ----------------------------------------------------------------------


def test_json_array_and_wrapper_objects() -> None:
    items = [
        {"Question": "q1", "ideal": "a1", "context": "one passage", "tags": "a|b", "extra": [1]},
        {"input": "q2", "metadata": {"m": 1}, "expected_output": None, "vars": {"v": 2}},
    ]
    for document in (items, {"name": "set", "tests": items}, {"cases": items}):
        first, second = parse_cases(json.dumps(document).encode(), "json")
        assert (first.input, first.expected_output) == ("q1", "a1")
        assert first.context == ["one passage"]
        assert first.tags == ["a", "b"]
        assert first.metadata == {"extra": [1]}
        assert (second.metadata, second.variables) == ({"m": 1}, {"v": 2})


def test_json_errors_point_at_item_lines() -> None:
    content = json.dumps(
        {"name": "x", "tests": [{"input": "ok"}, {"behavior": "b"}, "text", {"input": 5}]},
        indent=2,
    )
    exc = invalid(content, "json")
    lines = content.splitlines()
    expected_lines = [
        next(i for i, text in enumerate(lines, 1) if '"behavior"' in text) - 1,
        next(i for i, text in enumerate(lines, 1) if '"text"' in text),
        next(i for i, text in enumerate(lines, 1) if '"input": 5' in text) - 1,
    ]
    assert located(exc) == list(zip(expected_lines, ["input", None, "input"], strict=True))
    assert [error["item"] for error in exc.errors or []] == [2, 3, 4]


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ('[\n  {"input": "a"},\n  {"input": "b",}\n]', 3),
        ('[\n  {"input": "a"}\n  {"input": "b"}\n]', 3),
        ('{"tests": [{"input": "a"}],\n}', 2),
        ('[{"input": "a"}]\n[]', 2),
    ],
)
def test_json_malformed_names_the_line(content: str, line: int) -> None:
    exc = invalid(content, "json")
    assert f"line {line}" in exc.detail
    assert (exc.errors or [])[0]["line"] == line


def test_json_wrong_shapes() -> None:
    assert "'tests'" in invalid('{"name": "no tests"}', "json").detail
    assert "array" in invalid('"just a string"', "json").detail
    assert "no test cases" in invalid("[]", "json").detail
    assert "no test cases" in invalid("  \n", "json").detail


def test_jsonl_collects_bad_lines() -> None:
    content = '{"prompt": "a"}\n\n{"prompt": }\n[1]\n{"target": "t"}\n{"input": "ok"}\n'
    exc = invalid(content, "jsonl")
    assert located(exc) == [(3, None), (4, None), (5, "input")]
    assert "invalid JSON" in (exc.errors or [])[0]["message"]


def test_jsonl_line_separator_inside_a_string_is_not_a_new_line() -> None:
    content = '{"input": "a\u2028b"}\r\n{"input": "c\x85d"}\r\n'
    cases = parse_cases(content.encode(), "jsonl")
    assert [case.input for case in cases] == ["a\u2028b", "c\x85d"]


# --- encoding and empty files -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_bom_is_ignored(fmt: str) -> None:
    body = {"csv": "input\nhello\n", "json": '[{"input": "hello"}]', "jsonl": '{"input": "hello"}'}
    [case] = parse_cases(b"\xef\xbb\xbf" + body[fmt].encode(), fmt)  # type: ignore[arg-type]
    assert case.input == "hello"


def test_non_utf8_names_the_offset() -> None:
    content = "input\ncafé\n".encode("latin-1")
    exc = invalid(content, "csv")
    assert "not UTF-8 text" in exc.detail and "offset 9" in exc.detail
    assert (exc.errors or [])[0]["line"] == 2
    assert "offset 12" in invalid(b"\xef\xbb\xbf" + content, "csv").detail


@pytest.mark.parametrize("content", ["", "input,expected_output\n", "input\n\n ,\n"])
def test_empty_csv(content: str) -> None:
    assert "no test cases" in invalid(content, "csv").detail


def test_empty_jsonl() -> None:
    assert "no test cases" in invalid("\n \n", "jsonl").detail


# --- export and round trips ---------------------------------------------------------------------

NASTY = [
    Case(
        input='=HYPERLINK("http://evil", "x")',
        expected_output='+1, -2 and "quoted"\nsecond line',
        context=["@SUM(A1)", "-3|four", "'=already quoted"],
        behavior="-refuses",
        category="''=two quotes",
        topic="naïve café 🚀",
        tags=["a,b", "c|d", "=tag"],
        variables={"x": "=1", "nested": {"list": [1, None]}},
        metadata={"source": "@home", "n": 3},
    ),
    Case(
        messages=[
            {"role": "system", "content": "=be nice"},
            {"role": "user", "content": "line1\r\nline2"},
        ],
        expected_output="'plain apostrophe",
    ),
    Case(input="-", expected_output="@"),
    Case(input='中文, "引号"', context=["[1] citation"]),
    # Agent fields, an empty list among them (it expects no call), and a conversation alone:
    Case.model_validate(
        {
            "input": "book it",
            "expected_tool_calls": [{"name": "book", "arguments": {"n": 2}}],
            "tool_responses": [{"name": "book", "response": "=ok"}],
            "max_steps": 3,
        }
    ),
    Case.model_validate({"input": "just answer", "expected_tool_calls": []}),
    Case.model_validate({"input": "no messages", "messages": []}),  # not none: written
    Case.model_validate({"conversation": {"turns": ["hi", "bye"]}}),
    # Cells larger than the csv module reads by default (131,072 characters):
    Case(input="big", metadata={"blob": "a" * 150_000}),
    Case(messages=[{"role": "user", "content": "b" * 80_000}, {"role": "user", "content": "c"}]),
]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_round_trip(fmt: str) -> None:
    exported = export_cases(NASTY, fmt)  # type: ignore[arg-type]
    assert parse_cases(exported, fmt) == NASTY  # type: ignore[arg-type]


def test_case_documents_leave_out_only_the_defaults() -> None:
    """What an import writes from: each case's dump less the top-level fields at their own
    default; an empty list where the default is None, nested defaults (a tool call's `match`,
    a tool response's `arguments`) and empty values inside a field stay as they are."""
    agent = {
        "messages": [{"role": "user", "content": "Book a table"}],
        "expected_tool_calls": [{"name": "book", "arguments": {"people": 2}}],
        "tool_responses": [{"name": "book", "response": {"ok": True}}],
        "max_steps": 4,
        "variables": {"zero": 0, "none": None, "empty": []},
    }
    empty = {"input": "x", "tags": [], "metadata": {"n": 3}, "expected_tool_calls": []}
    content = json.dumps([agent, empty]).encode()

    assert parse_case_documents(content, "json") == [
        {
            "messages": [{"role": "user", "content": "Book a table"}],
            "expected_tool_calls": [{"name": "book", "arguments": {"people": 2}, "match": "exact"}],
            "tool_responses": [{"name": "book", "arguments": None, "response": {"ok": True}}],
            "max_steps": 4,
            "variables": {"zero": 0, "none": None, "empty": []},
        },
        {"input": "x", "metadata": {"n": 3}, "expected_tool_calls": []},
    ]


def test_csv_export_neutralises_formulas() -> None:
    rows = list(csv.reader(io.StringIO(export_cases(NASTY, "csv").decode(), newline="")))
    assert rows[0] == CSV_COLUMNS
    first = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert first["input"] == '\'=HYPERLINK("http://evil", "x")'
    assert first["expected_output"].startswith("'+1")
    assert first["behavior"] == "'-refuses"
    assert first["category"] == "'''=two quotes"
    assert json.loads(first["context"]) == ["@SUM(A1)", "-3|four", "'=already quoted"]
    assert json.loads(first["metadata"]) == {"source": "@home", "n": 3}
    second = dict(zip(CSV_COLUMNS, rows[2], strict=True))
    assert second["input"] == "" and second["context"] == "" and second["tags"] == ""
    assert second["expected_output"] == "'plain apostrophe"  # not a formula: left alone
    assert rows[3][:2] == ["'-", "'@"]
    for row in rows[1:]:
        assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for cell in row)


def test_csv_import_removes_the_neutralising_quote() -> None:
    content = "input,expected_output,behavior\n'=1+1,'@x,'plain\n"
    [case] = parse_cases(content.encode(), "csv")
    assert (case.input, case.expected_output, case.behavior) == ("=1+1", "@x", "'plain")


def test_json_and_jsonl_exports() -> None:
    exported = json.loads(export_cases(NASTY, "json"))
    assert isinstance(exported, list) and exported[0]["topic"] == "naïve café 🚀"
    assert "🚀".encode() in export_cases(NASTY, "json")
    lines = export_cases(NASTY, "jsonl").decode().split("\n")
    assert lines[-1] == "" and len(lines) == len(NASTY) + 1
    assert json.loads(lines[1])["messages"][1]["content"] == "line1\r\nline2"
