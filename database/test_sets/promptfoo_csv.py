"""A row of a CSV file of promptfoo tests as the test object it stands for (pure)."""

from __future__ import annotations

from typing import Any

from database.test_sets.foreign_assertions import csv_assertion


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
