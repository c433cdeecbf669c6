"""Export of a test set's cases as CSV, JSON and JSONL, a page at a time: the encoders (pure
functions, no I/O; io.parse_cases reads each back to equal cases), and the readers of the
pages (the current cases, a version's), each page ended by its weight as well as its rows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.test_sets import crud
from database.test_sets.crud import version_cases
from database.test_sets.io import CSV_COLUMNS, Format
from database.test_sets.models import TestSet, TestSetVersion
from database.test_sets.streaming import (
    PAGE_BYTES,
    PAGE_ROWS,
    GoneMidway,
    JsonArrayEncoder,
    PageEncoder,
    ReadPage,
    csv_quoted,
    csv_text,
    gone_midway,
    json_dump,
    json_text,
)
from database.tests import crud as test_crud
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
    """An empty cell for what an empty cell reads back as: nothing, or the field's default (an
    empty list or object). Any other `[]` is written (`expected_tool_calls: []` expects no
    call; `messages: []` reads back so, not as no messages)."""
    if type(value) is str:
        return csv_quoted(guard_formula(value))
    if value is None or value == _EMPTY_CELL[column]:
        return ""
    return csv_quoted(guard_formula(json_text(value)))


_EMPTY_CELL = {
    column: TestCaseFields.model_fields[column].get_default(call_default_factory=True)
    for column in CSV_COLUMNS
}


def _next_rows(taken: int) -> int:
    """How many cases the next page weighs at most: twice what the last one took, up to
    PAGE_ROWS, so that a set of large cases (few to a page) is not weighed 500 at a time."""
    return max(1, min(PAGE_ROWS, 2 * taken))


def current_pages(
    test_set_id: uuid.UUID, test_ids: Sequence[uuid.UUID]
) -> ReadPage[dict[str, Any]]:
    """The set's current cases, a page at a time, in the order of `test_ids` (read before).

    A test deleted before its page is read (with its project, or alone) ends the document as
    incomplete: what was sent is the set neither as it was when the export began nor as it is,
    and a file short of a case must not look whole. A test only taken out of the set is still
    there, and is sent: the document is the set as it was when the export began."""
    start, rows = 0, PAGE_ROWS

    async def read(session: AsyncSession) -> list[dict[str, Any]] | None:
        nonlocal start, rows
        if start >= len(test_ids):
            return None
        page = test_ids[start : start + rows]
        sizes = await crud.case_sizes(session, page)
        held, taken = 0, 0
        while taken < len(page) and (not taken or held < PAGE_BYTES):
            held, taken = held + sizes.get(page[taken], 0), taken + 1
        start, rows = start + taken, _next_rows(taken)
        tests = await crud.tests_in_order(session, page[:taken])
        if len(tests) < taken:
            await gone_midway(session, TestSet, test_set_id, "test set")
            raise GoneMidway("a test of the set was deleted while it was exported")
        return [test_crud.case_fields(t) for t in tests]

    return read


def version_pages(version_id: uuid.UUID) -> ReadPage[dict[str, Any]]:
    """A published version's cases, a page at a time, in order."""
    after, rows = -1, PAGE_ROWS

    async def read(session: AsyncSession) -> list[dict[str, Any]] | None:
        nonlocal after, rows
        page = await version_cases.version_cases_after(
            session, version_id, after, limit=rows, max_bytes=PAGE_BYTES
        )
        if not page:
            await gone_midway(session, TestSetVersion, version_id, "test set version")
            return None
        after, rows = page[-1].position, _next_rows(len(page))
        return [row.case for row in page]

    return read
