"""The exports' CSV writer: byte for byte what the csv module's default dialect writes, for
every kind of cell the exports hold and for random text made of the characters that matter;
and their JSON cells, byte for byte what json.dumps writes."""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from database.test_sets.streaming import csv_text, json_text

CELLS: list[Any] = [
    "",
    None,
    "plain",
    "a, comma",
    'a "quote"',
    '"',
    '""',
    "line\nbreak",
    "carriage\rreturn",
    "crlf\r\n",
    " leading and trailing spaces ",
    "'=SUM(A1)",
    "\t tab",
    "nul \x00 byte",
    "日本語 🚀 Zoë",
    0,
    -17,
    2**70,
    True,
    False,
    0.1 + 0.2,
    1e-05,
    -0.0,
    float("nan"),
    float("inf"),
    uuid.UUID("2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a"),
]
# The characters the dialect treats specially, among ordinary ones.
ALPHABET = ",\"\r\n \t'=a\x00é"


def reference(rows: Sequence[Sequence[Any]]) -> bytes:
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode()


@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_a_cell_alone_and_among_others_is_written_as_the_csv_module_writes_it(cell):
    for row in ([cell], [cell, cell], ["before", cell, "after"], [cell, ""], [None, cell]):
        assert csv_text([row]) == reference([row])


def test_rows_without_cells_and_of_empty_cells_are_written_as_the_csv_module_writes_them():
    rows: list[list[Any]] = [[], [""], [None], ["", ""], [None, None], [""], []]
    assert csv_text(rows) == reference(rows)


def test_random_rows_of_the_special_characters_are_written_as_the_csv_module_writes_them():
    generator = random.Random(17)
    rows = [
        [
            "".join(generator.choices(ALPHABET, k=generator.randint(0, 12)))
            for _ in range(generator.randint(1, 4))
        ]
        for _ in range(3_000)
    ]
    assert csv_text(rows) == reference(rows)
    # And the module reads each row back as it was.
    assert list(csv.reader(io.StringIO(csv_text(rows).decode(), newline=""))) == rows


JSON_VALUES: list[Any] = [
    ["a passage", "日本語 🚀 Zoë", 'a "quote"\n'],
    {"n": 1, "nested": {"list": [1, 2.5, None, True]}, "ünï": "\x00\u2028"},
    [0.1 + 0.2, 1e-05, -0.0, float("nan"), float("inf"), 2**70],
    "a lone string",
    [],
    {},
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_a_json_cell_is_written_as_json_dumps_writes_it(value):
    assert json_text(value) == json.dumps(value, ensure_ascii=False)
