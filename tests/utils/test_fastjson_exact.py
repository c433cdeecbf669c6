"""Stored JSON is read by orjson where that gives what the standard library gives, and by the
standard library where it would not (big integers, what orjson refuses): the same values, of
the same types, whichever reads them, on the ORM's connection and the driver's alike."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from database.core import Database
from database.driver import driver_connection
from utils.fastjson import loads_exact

DOCUMENTS = [
    "{}",
    "[]",
    "null",
    '{"n": 123456789012345678901234567890, "m": -123456789012345678901234567890}',
    '{"max": 18446744073709551615, "below": -9223372036854775809, "i64": 9223372036854775807}',
    '{"digits": "1234567890123456789012", "short": 123456789012345678}',
    '{"pi": 3.141592653589793, "tiny": 5e-324, "big": 1.7976931348623157e308, "x": 0.1}',
    '{"f": 1.50, "neg": -0.0, "zero": -0, "e": 1.5e-7, "one": 1.0, "int": 1}',
    '{"text": "Grüße, 世界 🎉", "escapes": "\\u00e9\\n\\t\\"\\\\", "nul": "a\\u0000b"}',
    '{"a": {"b": [1, 2.5, "three", null, true, false, {"c": []}]}}',
    '{"a": 1, "a": 2}',
    "[" * 200 + "]" * 200,
    "[1e400, -1e400]",
    '["\\ud800", "\\udfff x"]',
    "[NaN, Infinity, -Infinity]",
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_reads_as_the_standard_library_does(document: str):
    assert repr(loads_exact(document)) == repr(json.loads(document))


def test_refuses_what_is_not_json():
    for document in ("", "{", "[1,]", "nope", "[1] x"):
        with pytest.raises(ValueError):
            loads_exact(document)


# A user's JSON as PostgreSQL stores and prints it (jsonb: numbers as numeric, so 1e400 comes
# back as 401 digits; json: the text as it was sent).
STORED = [d for d in DOCUMENTS if not any(s in d for s in ("\\ud8", "\\udf", "\\u0000", "NaN"))]


@pytest.mark.parametrize("document", STORED)
@pytest.mark.parametrize("kind", ["jsonb", "json"])
async def test_stored_json_comes_back_as_the_standard_library_reads_it(
    database: Database, kind: str, document: str
):
    async with database.sessionmaker() as session:
        printed = await session.scalar(
            text(f"SELECT CAST(CAST(:d AS {kind}) AS text)"), {"d": document}
        )
        expected = repr(json.loads(printed))
        through_orm = await session.scalar(text(f"SELECT CAST(:d AS {kind})"), {"d": document})
        driver = await driver_connection(session)
        through_driver = await driver.fetchval(f"SELECT $1::text::{kind}", document)
    assert repr(through_orm) == expected
    assert repr(through_driver) == expected
