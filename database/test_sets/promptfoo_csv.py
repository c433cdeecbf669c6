"""A CSV file of promptfoo tests read into the test objects its rows stand for (pure)."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from typing import Any

from database.test_sets.foreign_assertions import csv_assertion
from database.test_sets.foreign_documents import invalid
from database.test_sets.import_bounds import MeasuredLines, width_complaint
from database.test_sets.io import MAX_COLUMNS


def csv_tests(text: str, name: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Each row's line and test, or why the row is not one; rows of empty cells are skipped,
    and a malformed row ends the file. InvalidInput for a bad header."""
    lines = MeasuredLines(text)
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise invalid(f"malformed CSV header: {exc}", 1, name) from None
    if header is None:
        return
    names = [column.strip() for column in header]
    if len(names) > MAX_COLUMNS:
        raise invalid(f"{len(names)} columns; at most {MAX_COLUMNS}", 1, name)
    twice = [column for column, n in Counter(names).items() if column and n > 1]
    if twice:
        raise invalid(f"the column {twice[0]!r} appears twice", 1, name)
    start = reader.line_num + 1
    lines.take()
    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:
            yield start, f"malformed CSV: {exc}"
            return
        if row is None:
            return
        line, start = start, reader.line_num + 1
        problem = width_complaint(lines.take())
        try:
            test = None if problem else csv_test(names, row)
        except ValueError as exc:
            problem = str(exc)
        if problem:
            yield line, problem
        elif test is not None and any(cell.strip() for cell in row):  # else a blank line
            yield line, test


def csv_test(names: list[str], row: list[str]) -> dict[str, Any]:
    """Columns are vars; `__expected*` hold assertions, `__metadata:*` metadata (a name ending
    in `[]`, a comma-separated list), `__description` the description. ValueError if bad."""
    test: dict[str, Any] = {"vars": {}, "assert": [], "metadata": {}}
    for index, cell in enumerate(row):
        column = names[index] if index < len(names) else ""
        if not column:
            if cell.strip():
                raise ValueError(f"a value in column {index + 1}, which has no header")
        elif column.startswith("__expected"):
            if cell.strip():
                test["assert"].append(csv_assertion(cell))
        elif column.startswith("__metadata:"):
            key = column.removeprefix("__metadata:")
            if cell.strip() and key.endswith("[]"):
                test["metadata"][key[:-2]] = [p.strip() for p in cell.split(",") if p.strip()]
            elif cell.strip():
                test["metadata"][key] = cell
        elif column == "__description":
            if cell.strip():
                test["description"] = cell
        elif column.startswith("__"):
            if cell.strip():
                test[column] = cell
        else:
            test["vars"][column] = cell
    return test
