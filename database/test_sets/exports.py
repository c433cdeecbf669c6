"""Export of a test set's cases as CSV, JSON and JSONL, a page at a time (pure functions, no
I/O): io.parse_cases reads each back to equal cases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from database.test_sets.io import CSV_COLUMNS, Format
from database.test_sets.streaming import (
    JsonArrayEncoder,
    PageEncoder,
    csv_quoted,
    csv_text,
    json_dump,
    json_text,
)
from database.tests.agent_fields import AGENT_FIELDS
from database.tests.schemas import TestCaseFields
from utils.csv_cells import guard_formula


def case_encoder(fmt: Format) -> PageEncoder[TestCaseFields]:
    """Writes cases in `fmt` a page at a time; parse_cases reads the result back to equal cases."""
    if fmt == "json":
        return JsonArrayEncoder[TestCaseFields]()
    if fmt == "jsonl":
        return _JsonLinesEncoder()
    return _CsvEncoder()


def export_cases(cases: list[TestCaseFields], fmt: Format) -> bytes:
    """Serialise cases at once (exports of stored sets stream, with case_encoder)."""
    encoder = case_encoder(fmt)
    return encoder.head() + encoder.page(cases) + encoder.tail()


class _JsonLinesEncoder:
    def head(self) -> bytes:
        return b""

    def page(self, cases: Sequence[TestCaseFields]) -> bytes:
        return "".join([json_text(json_dump(case)) + "\n" for case in cases]).encode()

    def tail(self) -> bytes:
        return b""


class _CsvEncoder:
    def head(self) -> bytes:
        return csv_text([CSV_COLUMNS])

    def page(self, cases: Sequence[TestCaseFields]) -> bytes:
        return "".join([_csv_line(json_dump(case)) for case in cases]).encode()

    def tail(self) -> bytes:
        return b""


def _csv_line(case: dict[str, Any]) -> str:
    """The case's row as csv_text writes it (its cells are all text: never a lone empty one)."""
    return ",".join([_export_cell(column, case.get(column)) for column in CSV_COLUMNS]) + "\r\n"


def _export_cell(column: str, value: Any) -> str:
    """An empty cell for what an empty cell reads back as: nothing, or an empty list or object
    where that is the field's default. An agent field's `[]` is not (`expected_tool_calls: []`
    expects no call), so it is written."""
    if type(value) is str:
        return csv_quoted(guard_formula(value))
    if value is None or value == {} or (value == [] and column not in AGENT_FIELDS):
        return ""
    return csv_quoted(guard_formula(json_text(value)))
