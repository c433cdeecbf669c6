"""Import of a test set's cases from CSV, JSON and JSONL (pure functions, no I/O; the
exports are in exports.py, and write what this reads back).

An import is parsed whole before anything is written, off the event loop (see the service),
within limits that bound the work of any one row: its columns, its size and, for JSON, its
nesting (Python's decoder recurses once per level)."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeAlias, TypeVar

from pydantic import ValidationError

from database.test_sets.formats import Format as Format
from database.test_sets.formats import detect_format as detect_format
from database.test_sets.import_bounds import (
    MeasuredLines,
    bounded_json,
    csv_row_too_wide,
    json_items,
    too_wide,
)
from database.tests.agent_fields import AGENT_FIELDS
from database.tests.schemas import TestCaseFields
from utils.csv_cells import unguard_formula
from utils.errors import InvalidInput
from utils.problems import at_line, placed

# Where a record starts ({"line": n}, plus "item" in JSON) and either its fields or its errors.
Row: TypeAlias = tuple[dict[str, Any], dict[str, Any] | list[dict[str, Any]]]
T = TypeVar("T")

MAX_CASES = 100_000
MAX_COLUMNS = 200  # beyond the test's own fields, each column is a metadata key
# A file full of bad rows must not turn into a multi-megabyte error response.
MAX_REPORTED_ERRORS = 1000

_ALIASES = {
    **dict.fromkeys(["input", "prompt", "question", "query"], "input"),
    **dict.fromkeys(
        ["expected_output", "expected", "answer", "ideal", "reference", "target"],
        "expected_output",
    ),
    **dict.fromkeys(["context", "contexts", "passages"], "context"),
    **dict.fromkeys(["behavior", "behaviour"], "behavior"),
    **dict.fromkeys(["variables", "vars"], "variables"),
    **{name: name for name in ["category", "topic", "tags", "messages", "metadata"]},
    **{name: name for name in AGENT_FIELDS},
}
_JSON_CELLS = {"messages", "variables", "metadata", *AGENT_FIELDS} - {"max_steps"}
# What a case's document leaves out, field by field: an empty list is not every list's
# default (`expected_tool_calls: []` expects no call).
_FIELD_DEFAULTS = {
    name: field.get_default(call_default_factory=True)
    for name, field in TestCaseFields.model_fields.items()
}
CSV_COLUMNS = [
    "input",
    "expected_output",
    "context",
    "behavior",
    "category",
    "topic",
    "tags",
    "messages",
    "variables",
    "metadata",
    *AGENT_FIELDS,  # a conversation-only test has nothing else; `[]` expects no tool call
]


def parse_cases(content: bytes, fmt: Format, *, max_cases: int = MAX_CASES) -> list[TestCaseFields]:
    """Parse and validate every case; raise one InvalidInput listing all bad rows."""
    return require_cases(_validated(_rows(content, fmt), max_cases, lambda _, case: case))


def parse_case_documents(
    content: bytes,
    fmt: Format,
    *,
    max_cases: int = MAX_CASES,
    allow_empty: bool = False,
    seen: Callable[[dict[str, Any]], object] | None = None,
) -> list[dict[str, Any]]:
    """As parse_cases, each case as the JSON its test is written from, less the fields at
    their default (which the insert fills in), dumped as soon as it is valid: a large file's
    models and their dumps are never all held side by side. `seen` gets each whole dump; a
    file of no cases is refused unless `allow_empty`, and an empty one even then."""

    def document(_: dict[str, Any], case: TestCaseFields) -> dict[str, Any]:
        dumped = case.model_dump(mode="json")
        if seen is not None:
            seen(dumped)
        # Not `exclude_defaults`, which would also leave out the defaults inside nested values.
        return {key: value for key, value in dumped.items() if value != _FIELD_DEFAULTS[key]}

    if allow_empty and (not content or content.isspace()):
        # An empty upload is more likely a step that wrote nothing than a wish for no cases.
        raise InvalidInput(
            "The file is empty, with no test cases: to empty the set, sync a file of no cases"
            " (a CSV header, [])",
            field="file",
        )
    cases = _validated(_rows(content, fmt), max_cases, document)
    return cases if allow_empty else require_cases(cases)


def _rows(content: bytes, fmt: Format) -> Iterator[Row]:
    text = _decode(content)
    if fmt == "csv":
        return _csv_rows(text)
    return _jsonl_rows(text) if fmt == "jsonl" else _json_rows(text)


def validate_rows(
    rows: Iterable[Row], *, max_cases: int = MAX_CASES
) -> list[tuple[dict[str, Any], TestCaseFields]]:
    """Each row's case with where it starts ({"line": n}, and "file" for an attached file);
    one InvalidInput listing every bad row (the first so many) when any is bad."""
    return require_cases(_validated(rows, max_cases, lambda where, case: (where, case)))


def _validated(
    rows: Iterable[Row], max_cases: int, keep: Callable[[dict[str, Any], TestCaseFields], T]
) -> list[T]:
    cases: list[T] = []
    errors: list[dict[str, Any]] = []
    total_errors = 0
    for count, (where, data) in enumerate(rows, start=1):
        if count > max_cases:
            raise InvalidInput(f"Too many test cases: at most {max_cases} per import")
        if isinstance(data, dict):
            try:
                cases.append(keep(where, TestCaseFields.model_validate(data)))
                continue
            except ValidationError as exc:
                # The only model-level rule is "input or messages", so it points at input.
                data = [
                    {
                        **where,
                        "field": ".".join(str(part) for part in error["loc"]) or "input",
                        "message": error["msg"],
                    }
                    for error in exc.errors(include_url=False)
                ]
        total_errors += len(data)
        # Each as the Problem schema has it, whichever parser made it (see utils.problems).
        errors.extend(placed(error) for error in data[: MAX_REPORTED_ERRORS - len(errors)])
    if errors:
        more = f" (the first {len(errors)} listed)" if total_errors > len(errors) else ""
        first = errors[0]
        place = f"{first['file']} line" if first.get("file") else "line"
        raise InvalidInput(
            f"{total_errors} invalid value(s) in the file{more}; the first, at {place} "
            f"{first['line']}: {first['message']}",
            errors=errors,
        )
    return cases


def require_cases(cases: list[T]) -> list[T]:
    """Refuses a file of no cases (but a sync's, which empties the set)."""
    if not cases:
        raise InvalidInput("The file contains no test cases")
    return cases


def _decode(content: bytes) -> str:
    bom = content.startswith(b"\xef\xbb\xbf")
    body = content[3:] if bom else content
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + (3 if bom else 0)
        line = content.count(b"\n", 0, offset) + 1
        raise InvalidInput(
            f"The file is not UTF-8 text: invalid byte at offset {offset} (line {line})",
            errors=[at_line(line, "not UTF-8 text", offset=offset)],
        ) from None


def _field_name(key: str) -> str | None:
    return _ALIASES.get(key.strip().lower().replace(" ", "_").replace("-", "_"))


def _split_text_list(field: str, text: str) -> list[str]:
    parts = re.split(r"[|,]", text) if field == "tags" else text.split("|")
    return [part.strip() for part in parts if part.strip()]


def _csv_value(field: str, cell: str) -> Any:
    if field in _JSON_CELLS:
        try:
            return bounded_json(cell)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    if field in ("context", "tags"):
        if cell.lstrip().startswith("["):
            try:
                value = bounded_json(cell)
            except json.JSONDecodeError:
                value = None  # text that merely starts with "[", such as "[1] a citation"
            if isinstance(value, list):
                return value
        return _split_text_list(field, cell)
    return cell


def _with_extras(data: dict[str, Any], extras: dict[str, Any]) -> dict[str, Any]:
    if extras:
        metadata = data.get("metadata")
        if metadata is None:
            data["metadata"] = extras
        elif isinstance(metadata, dict):
            data["metadata"] = {**metadata, **extras}
    return data


def _csv_rows(text: str) -> Iterator[Row]:
    # Lines read with newline="" let the csv module see \r\n inside quoted cells, and line_num
    # then counts physical lines, so a record starts one line after where the previous one ended.
    lines = MeasuredLines(text)
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InvalidInput(f"Malformed CSV header: {exc}", errors=[at_line(1, str(exc))]) from None
    if header is None:
        return
    if len(header) > MAX_COLUMNS:
        message = f"{len(header)} columns; at most {MAX_COLUMNS}"
        raise InvalidInput(f"Invalid CSV header: {message}", errors=[at_line(1, message)])
    columns: list[tuple[str, str] | None] = []  # (field or "extra", name) per column
    seen: dict[tuple[str, str], str] = {}
    for raw in header:
        name = raw.strip()
        field = _field_name(name) if name else None
        column = ("field", field) if field else ("extra", name) if name else None
        if column in seen:
            message = f"columns {seen[column]!r} and {name!r} both give {column[1]!r}"
            raise InvalidInput(f"Invalid CSV header: {message}", errors=[at_line(1, message)])
        if column:
            seen[column] = name
        columns.append(column)
    if ("field", "input") not in seen and ("field", "messages") not in seen:
        message = f"no input (or prompt, question, messages) column among {header}"
        raise InvalidInput(f"Invalid CSV header: {message}", errors=[at_line(1, message)])

    start = reader.line_num + 1
    lines.take()
    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:
            yield {"line": start}, [at_line(start, f"malformed CSV: {exc}")]
            return
        if row is None:
            return
        line, start = start, reader.line_num + 1
        oversize = csv_row_too_wide(lines.take(), row)
        if oversize:
            yield {"line": line}, [at_line(line, oversize)]
            continue
        data: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        bad: list[dict[str, Any]] = []
        # Values in columns without a header: one error a row, however many (a megabyte of
        # `x,` is half a million of them).
        headerless, first_headerless = 0, 0
        for index, raw_cell in enumerate(row):
            cell = unguard_formula(raw_cell)
            if not cell.strip():
                continue
            column = columns[index] if index < len(columns) else None
            if column is None:
                first_headerless = first_headerless if headerless else index
                headerless += 1
            elif column[0] == "extra":
                extras[column[1]] = cell
            else:
                try:
                    data[column[1]] = _csv_value(column[1], cell)
                except ValueError as exc:
                    bad.append(at_line(line, str(exc), column[1]))
        if headerless:
            complaint = (
                "a value in a column without a header"
                if headerless == 1
                else f"{headerless} values in columns without a header, the first here"
            )
            bad.append(at_line(line, complaint, f"column {first_headerless + 1}"))
        if bad:
            yield {"line": line}, bad
        elif data or extras:  # a row of empty cells is a blank line
            yield {"line": line}, _with_extras(data, extras)


def _object_fields(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    data: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for key, item in value.items():
        field = _field_name(key)
        if item is None:
            continue
        if field is None:
            extras[key] = item
        elif field in data:
            raise ValueError(f"two keys give {field!r}")
        elif field == "context" and isinstance(item, str):
            data[field] = [item]
        elif field == "tags" and isinstance(item, str):
            data[field] = _split_text_list(field, item)
        else:
            data[field] = item
    return _with_extras(data, extras)


def _jsonl_rows(text: str) -> Iterator[Row]:
    # split("\n"), not splitlines(): the latter also breaks at U+2028 and other characters that
    # JSON strings may contain unescaped.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        oversize = too_wide(line)
        if oversize:
            yield {"line": number}, [at_line(number, oversize)]
            continue
        try:
            yield {"line": number}, _object_fields(bounded_json(line))
        except json.JSONDecodeError as exc:
            complaint = f"invalid JSON: {exc.msg} at column {exc.colno}"
            yield {"line": number}, [at_line(number, complaint)]
        except ValueError as exc:
            yield {"line": number}, [at_line(number, str(exc))]


def _json_rows(text: str) -> Iterator[Row]:
    # Read lazily: `_validated` stops at max_cases + 1 cases, and the rest is never decoded.
    try:
        yield from _json_item_rows(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"Invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            errors=[at_line(exc.lineno, exc.msg)],
        ) from None


def _json_item_rows(text: str) -> Iterator[Row]:
    line, counted = 1, 0
    for index, (position, end, value) in enumerate(json_items(text), start=1):
        line += text.count("\n", counted, position)
        counted = position
        where = {"line": line, "item": index}
        try:
            oversize = too_wide(text, position, end)
            if oversize:
                raise ValueError(oversize)
            yield where, _object_fields(value)
        except ValueError as exc:
            yield where, [at_line(line, str(exc), item=index)]
