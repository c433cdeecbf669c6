"""The JSON export's writer (orjson, with the standard library's floats): byte for byte what
json.dumps(..., ensure_ascii=False, indent=2) writes for the whole list, whatever the values,
page after page, and the standard library's own writing for what orjson refuses."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from pydantic import BaseModel

from database.test_sets.streaming import JsonArrayEncoder


class Item(BaseModel):
    value: Any


VALUES: list[Any] = [
    0.0,
    -0.0,
    1e-05,
    5e-324,
    1e16,
    1.7976931348623157e308,
    0.1 + 0.2,
    math.nan,
    math.inf,
    -math.inf,
    2**63 - 1,
    -(2**63),
    True,
    None,
    "",
    'quotes " and \\ backslash / slash',
    "control \x00 \x07 \x1b[31m \t \n \r \b \f \x7f",
    "line \u2028 paragraph \u2029 bom \ufeff",
    "日本語 🚀 Zoë",
    [],
    {},
    [[], {}, [1.5, {"nested": [2.5e-7, "x"]}]],
    {"b": 1, "a": {"z": [], "y": {}}, "": 0.5},
]


def _document(encoder: JsonArrayEncoder, pages: list[list[Item]]) -> bytes:
    return encoder.head() + b"".join(encoder.page(page) for page in pages) + encoder.tail()


@pytest.mark.parametrize("page_size", [1, 4, len(VALUES)])
def test_pages_write_what_the_standard_library_writes(page_size):
    items = [Item(value=value) for value in VALUES]
    pages = [items[i : i + page_size] for i in range(0, len(items), page_size)]
    expected = json.dumps(
        [item.model_dump(mode="json") for item in items], ensure_ascii=False, indent=2
    ).encode()
    assert _document(JsonArrayEncoder(), [[], *pages, []]) == expected


def test_what_orjson_refuses_is_written_by_the_standard_library():
    # An integer beyond 64 bits on one page; the pages around it are written by orjson.
    pages = [[Item(value=1.5)], [Item(value={"big": 2**70, "f": 1e-05})], [Item(value=[])]]
    expected = json.dumps(
        [{"value": 1.5}, {"value": {"big": 2**70, "f": 1e-05}}, {"value": []}],
        ensure_ascii=False,
        indent=2,
    ).encode()
    assert _document(JsonArrayEncoder(), pages) == expected


def test_an_empty_export_is_an_empty_list():
    assert _document(JsonArrayEncoder(), []) == b"[]"
    assert _document(JsonArrayEncoder(), [[], []]) == b"[]"
